"""Reading a pickled checkpoint without running anything it holds.

The published hypernetworks ship as ``torch.save`` pickles, and their own loaders open them with
``torch.load(weights_only=False)``: the file may then run any code it names. This is the one
place in the project that reads pickle, and it does so with torch's restricted unpickler
(``weights_only=True``), which rebuilds tensors and refuses every global that is not on an
allow-list. The allow-list here holds only what those checkpoints contain, and each of their
config classes (dataclasses of code that is not installed here) is rebuilt as a
:class:`PickledRecord`: its fields, nothing callable. A tensor saved on a GPU comes back on the
CPU. Anything else named in the file is refused with :class:`CheckpointError`, naming it, before
any of it is used.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from d2l_memory.errors import CheckpointError


class PickledRecord:
    """The fields of a pickled object of a class that is not imported (a dataclass, a config)."""

    fields: Mapping[str, Any] = MappingProxyType({})  # until the pickle's state is set

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        self.fields = dict(fields or {})

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise CheckpointError(f"a pickled config holds {type(state).__name__} state, not its fields")
        self.fields = dict(state)

    def __repr__(self) -> str:
        return f"PickledRecord({self.fields!r})"


def _enum_value(value: Any) -> Any:
    """What a pickled enum member of a class that is not imported comes back as: its value."""
    return value.value if isinstance(value, Enum) else value


def read_pickled_checkpoint(path: str | Path, *, records: Iterable[str], enums: Iterable[str] = ()) -> Any:
    """The object pickled in ``path`` by ``torch.save``, with tensors on the CPU.

    ``records``: the dotted names of the classes it may hold, each rebuilt as a
    :class:`PickledRecord`; ``enums``: enum classes, each member rebuilt as its value. Sets come
    back as sets. Any other global is refused (:class:`CheckpointError`, naming it) and nothing in
    the file is called.
    """
    path = Path(path)
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        raise CheckpointError(
            f"reading a pickled checkpoint safely needs torch 2.6 or later (its restricted unpickler), not {torch.__version__}"
        )
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a torch.save checkpoint (a zip archive); legacy and bare pickles are not read"
        )
    allowed: list[Any] = [set]
    allowed += [(PickledRecord, name) for name in records]
    allowed += [(_enum_value, name) for name in enums]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL (\S+)", str(err))
        if named:
            raise CheckpointError(
                f"{path} names {named.group(1)}, which is not among what this kind of checkpoint holds: refused, and"
                " nothing in the file was run"
            ) from err
        reason = re.search(r"WeightsUnpickler error: (.+)", str(err))
        raise CheckpointError(
            f"{path} was refused by the restricted unpickler ({reason.group(1) if reason else err}); nothing in the"
            " file was run"
        ) from err
    except (
        RuntimeError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
    ) as err:
        raise CheckpointError(f"{path} could not be read as a torch.save checkpoint: {err}") from err


def plain(value: Any) -> Any:
    """``value`` with every :class:`PickledRecord` turned into a dict of its fields, sets into
    sorted lists and tensors into lists: what a JSON config can hold."""
    if isinstance(value, PickledRecord):
        return {k: plain(v) for k, v in value.fields.items()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Enum):
        return value.value
    return value
