"""Mirrors modules/extensions.py: the list of installed extensions and lookups on it.

Simplified: extensions are registered by the harness (``register_extension``) instead of being
listed from the extensions directories; no git information is read."""

import configparser
import dataclasses
import os
import re

from modules import errors, shared

extensions = []
extension_paths = {}
loaded_extensions = {}


def active():
    # mirrors extensions.active: honours the disable-all options
    if shared.cmd_opts.disable_all_extensions or shared.opts.disable_all_extensions == "all":
        return []
    if shared.cmd_opts.disable_extra_extensions or shared.opts.disable_all_extensions == "extra":
        return [x for x in extensions if x.enabled and x.is_builtin]
    return [x for x in extensions if x.enabled]


@dataclasses.dataclass
class CallbackOrderInfo:
    name: str
    before: list
    after: list


class ExtensionMetadata:
    # mirrors extensions.ExtensionMetadata: metadata.ini reader. As in the real file, the canonical
    # name ends up being the lowercased directory name even when [Extension] Name is set.
    filename = "metadata.ini"

    def __init__(self, path, canonical_name):
        self.config = configparser.ConfigParser()
        try:
            self.config.read(os.path.join(path, self.filename))
        except Exception:
            errors.report(f"Error reading {self.filename} for extension {canonical_name}.", exc_info=True)
        self.canonical_name = canonical_name.lower().strip()
        self.requires = None

    def get_script_requirements(self, field, section, extra_section=None):
        text = self.config.get(section, field, fallback="")
        if extra_section:
            text = text + ", " + self.config.get(extra_section, field, fallback="")
        result = []
        for requirement in self.parse_list(text.lower()):
            alternatives = [x for x in requirement.split("|") if x in loaded_extensions]
            result.append(alternatives[0] if alternatives else requirement)
        return result

    def parse_list(self, text):
        if not text:
            return []
        return [x for x in re.split(r"[,\s]+", text.strip()) if x]

    def list_callback_order_instructions(self):
        for section in self.config.sections():
            if not section.startswith("callbacks/"):
                continue
            callback_name = section[len("callbacks/") :]
            if not callback_name.startswith(self.canonical_name):
                errors.report(
                    f"Callback order section for extension {self.canonical_name} is referencing the wrong extension: {section}"
                )
                continue
            yield CallbackOrderInfo(
                callback_name,
                self.parse_list(self.config.get(section, "Before", fallback="")),
                self.parse_list(self.config.get(section, "After", fallback="")),
            )


class Extension:
    # mirrors extensions.Extension (no git plumbing)
    def __init__(self, name, path, enabled=True, is_builtin=False, metadata=None):
        self.name = name
        self.path = path
        self.enabled = enabled
        self.status = ""
        self.can_update = False
        self.is_builtin = is_builtin
        self.commit_hash = ""
        self.commit_date = None
        self.version = ""
        self.branch = None
        self.remote = None
        self.have_info_from_repo = True
        self.metadata = metadata if metadata else ExtensionMetadata(self.path, name.lower())
        self.canonical_name = self.metadata.canonical_name

    def list_files(self, subdir, extension):
        # mirrors Extension.list_files: sorted files of <path>/<subdir> with the given suffix
        from modules import scripts

        dirpath = os.path.join(self.path, subdir)
        if not os.path.isdir(dirpath):
            return []
        found = [
            scripts.ScriptFile(self.path, filename, os.path.join(dirpath, filename)) for filename in sorted(os.listdir(dirpath))
        ]
        return [x for x in found if os.path.splitext(x.path)[1].lower() == extension and os.path.isfile(x.path)]


def register_extension(path, *, name=None, is_builtin=False):
    """Stand-in for extensions.list_extensions: adds one extension directory."""
    path = os.path.realpath(path)
    extension = Extension(name or os.path.basename(path), path, is_builtin=is_builtin)
    extensions.append(extension)
    extension_paths[extension.path] = extension
    loaded_extensions[extension.canonical_name] = extension
    return extension


def clear_extensions():
    extensions.clear()
    extension_paths.clear()
    loaded_extensions.clear()


def find_extension(filename):
    # mirrors extensions.find_extension: walks up from the file's directory to a registered extension root
    parentdir = os.path.dirname(os.path.realpath(filename))
    while parentdir != filename:
        extension = extension_paths.get(parentdir)
        if extension is not None:
            return extension
        filename = parentdir
        parentdir = os.path.dirname(filename)
    return None
