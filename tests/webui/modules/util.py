"""Mirrors the parts of modules/util.py the stand-in uses."""


def topological_sort(dependencies):
    # mirrors modules/util.py topological_sort: depth-first, dependencies first, insertion order
    # otherwise; unknown or circular dependencies are ignored.
    seen = set()
    ordered = []

    def visit(name):
        seen.add(name)
        for dependency in dependencies.get(name, []):
            if dependency in dependencies and dependency not in seen:
                visit(dependency)
        ordered.append(name)

    for name in dependencies:
        if name not in seen:
            visit(name)

    return ordered
