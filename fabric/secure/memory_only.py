"""A base for objects that hold secret keys: they refuse to be pickled or copied."""

from __future__ import annotations

from typing import NoReturn


class MemoryOnly:
    """Pickling or copying raises TypeError, so key material cannot leave the process through Ray."""

    __slots__ = ()

    def _refuse(self) -> NoReturn:
        raise TypeError(f"a {type(self).__name__} holds secret keys and cannot be pickled or copied")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self._refuse()

    def __reduce__(self) -> NoReturn:
        self._refuse()

    def __getstate__(self) -> NoReturn:
        self._refuse()

    def __copy__(self) -> NoReturn:
        self._refuse()

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._refuse()
