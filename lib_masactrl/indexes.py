"""Row and token index tensors, made on the device once and reused.

Every controlled attention call picks rows (a target's source, the target rows of a strength
blend, the rows a ControlNet unit acts on). Making those index tensors from Python lists in each
call would copy from the host to the device every time; on a GPU each such copy waits for the
queue, dozens of times per U-Net call on SDXL. The same few index lists recur in every step of a
pass (they depend only on the batch's row layout), so each is made once per pass and device and
looked up afterwards: after the first step a controlled call copies nothing from the host.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch


class DeviceIndexes:
    """Index tensors by their values and device. One lives as long as one attachment (a pass), so
    it holds as many entries as the pass has distinct row layouts: a handful."""

    def __init__(self) -> None:
        self._made: Dict[Tuple[Any, ...], torch.Tensor] = {}

    def rows(self, values: Sequence[int], device: torch.device) -> torch.Tensor:
        """``values`` as a long tensor on ``device``."""
        return self._get(("rows", tuple(values), torch.device(device)), values, torch.long)

    def flags(self, values: Sequence[bool], device: torch.device) -> torch.Tensor:
        """``values`` as a bool tensor on ``device``."""
        return self._get(("flags", tuple(values), torch.device(device)), values, torch.bool)

    def _get(self, key: Tuple[Any, ...], values: Sequence[Any], dtype: torch.dtype) -> torch.Tensor:
        made = self._made.get(key)
        if made is None:
            made = torch.tensor(list(values), dtype=dtype, device=key[2])
            self._made[key] = made
        return made

    def clear(self) -> None:
        self._made.clear()

    def __len__(self) -> int:
        return len(self._made)
