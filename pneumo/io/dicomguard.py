"""The one way untrusted DICOM bytes are parsed: a structure scan first, then pydicom.

pydicom builds a Python object for every data element and every sequence item, so a
small file can hold a great deal of work: 3.45 MB of empty items in one sequence kept a
worker busy for a minute and a half. :func:`scan` walks the raw bytes first, without
building anything, and refuses a file whose structure is beyond :data:`MAX_ELEMENTS`
data elements, :data:`MAX_ITEMS` sequence items (encapsulated pixel data fragments
included) or sequences nested :data:`MAX_DEPTH` deep, before pydicom sees it.

The scan follows the rules pydicom's reader follows, so that it counts what pydicom
would build: the 128-byte preamble is optional; the File Meta group is Explicit VR
Little Endian and the Transfer Syntax UID (0002,0010) chooses the data set's encoding
(Implicit or Explicit VR Little Endian, Explicit VR Big Endian, Deflated Explicit VR
Little Endian, inflated here first to at most :data:`MAX_INFLATED_BYTES`); a data set or
sequence item whose first element has no VR letters is read as implicit VR, and so is
any element whose VR bytes are not letters; sequences (SQ, an undefined-length UN,
and the implicit VR elements the data dictionaries call SQ) are walked item by item,
with defined or undefined lengths; an undefined-length value that is not a sequence is
encapsulated pixel data (fragments up to the Sequence Delimitation Item) or, failing
that, the bytes up to that delimiter.

:func:`read_dataset` is what every DICOM reader calls (the upload reader, the DICOMweb
receiver, the SEG note and the exports): the scan, then pydicom with every element
converted, so that a damaged value fails here and not later, and every exception the
parser raises turned into a refusal by :func:`refusal`.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from typing import Callable

import pydicom
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from pneumo.errors import (
    CorruptImageError,
    DicomTooComplexError,
    PneumoError,
    UnsupportedImageError,
)

#: Most data elements a file may hold, at every level together (a CR or DX image has a
#: few hundred, a single-frame SEG about two hundred).
MAX_ELEMENTS = 50_000
#: Most sequence items (and encapsulated pixel data fragments) a file may hold.
MAX_ITEMS = 10_000
#: Deepest nesting of sequences (an image's Referenced Series > Referenced Instance is
#: 2, a SEG's functional groups 2, a TID 1500 report's content tree about 6).
MAX_DEPTH = 12
#: Most bytes a deflated data set may inflate to (a 50-megapixel 16-bit image is 100 MB).
MAX_INFLATED_BYTES = 128 * 1024 * 1024

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_TRANSFER_SYNTAX = 0x00020010
#: Top-level elements whose values name the instance: (Media Storage) SOP Class and
#: SOP Instance UIDs.
_IDENTITY = (0x00020002, 0x00020003, 0x00080016, 0x00080018)
_KNOWN_VRS = frozenset(vr.value.encode() for vr in VR if len(vr.value) == 2)
_LONG_VRS = frozenset(vr.value.encode() for vr in EXPLICIT_VR_LENGTH_32)
#: Per byte order: implicit header (tag, 4-byte length), explicit header (tag, VR,
#: 2-byte length), a 4-byte length, a tag.
_STRUCTS = {
    little: (
        struct.Struct(f"{o}HHL"),
        struct.Struct(f"{o}HH2sH"),
        struct.Struct(f"{o}L"),
        struct.Struct(f"{o}HH"),
    )
    for little, o in ((True, "<"), (False, ">"))
}
_SEQUENCE_END_BYTES = {little: _STRUCTS[little][3].pack(0xFFFE, 0xE0DD) for little in _STRUCTS}
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class DicomScan:
    """A walk over a DICOM file's raw bytes that counts what a parser would build.

    ``DicomScan(data).run()`` raises :class:`DicomTooComplexError` as soon as a limit is
    passed (the counters then say how far it got) and :class:`CorruptImageError` for a
    deflated data set that does not inflate. Damaged structure (a length past the end of
    the file) is not judged here: the walk stops where the bytes end and pydicom says
    what is wrong.

    Attributes:
        elements: data elements seen, at every level.
        items: sequence items and pixel data fragments seen.
        depth: deepest sequence nesting seen.
        deflated: the data set was deflated (and was inflated to be walked).
        transfer_syntax: the Transfer Syntax UID (0002,0010), if the file has one.
        identity: top-level (Media Storage) SOP Class and Instance UIDs, by tag.
    """

    def __init__(self, data: bytes, stop_after_group: int | None = None):
        """``stop_after_group``: end the walk at the first top-level element of a later
        group (e.g. 0x0008 to read no more than the instance's identity)."""
        self.data = bytes(data)
        self.elements = 0
        self.items = 0
        self.depth = 0
        self.deflated = False
        self.transfer_syntax: str | None = None
        self.identity: dict[int, str] = {}
        self._stop_after_group = stop_after_group

    # -- the file --------------------------------------------------------------------

    def run(self) -> DicomScan:
        """Walk the whole file (preamble, File Meta, command set, data set)."""
        size = len(self.data)
        pos = 132 if self.data[128:132] == b"DICM" else 0
        pos = self._dataset(pos, None, size, False, True, 0, stop=lambda t: t >> 16 != 0x0002)
        pos = self._dataset(pos, None, size, True, True, 0, stop=lambda t: t >> 16 != 0x0000)
        if pos >= size:
            return self
        implicit, little = self._encoding(pos)
        if self.transfer_syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
            self.data = inflate(self.data[pos:], MAX_INFLATED_BYTES)
            pos, self.deflated = 0, True
        stop = None
        if self._stop_after_group is not None:
            stop = lambda t: t >> 16 > self._stop_after_group  # noqa: E731
        self._dataset(pos, None, len(self.data), implicit, little, 0, stop=stop)
        return self

    def _encoding(self, pos: int) -> tuple[bool, bool]:
        """(implicit VR, little endian) of the data set at ``pos``, as pydicom chooses it."""
        syntax = self.transfer_syntax
        if syntax is None:  # no File Meta: guessed from the first element
            if pos + 6 > len(self.data):
                return True, True
            group, _, vr = struct.unpack_from("<HH2s", self.data, pos)
            explicit = vr in _KNOWN_VRS
            return not explicit, not (explicit and group >= 1024)
        if syntax == pydicom.uid.ImplicitVRLittleEndian:
            return True, True
        if syntax == pydicom.uid.ExplicitVRBigEndian:
            return False, False
        return False, True

    # -- data sets, sequences, values ------------------------------------------------

    def _dataset(
        self,
        pos: int,
        end: int | None,
        limit: int,
        implicit: bool,
        little: bool,
        depth: int,
        stop: Callable[[int], bool] | None = None,
    ) -> int:
        """Walk one data set from ``pos``; returns the position after it.

        Args:
            end: where its defined length ends (``None``: at an Item Delimitation Item).
            limit: where the bytes the parser reads end (a defined-length sequence is
                parsed from a copy of its value).
            depth: sequence nesting of this data set (0: the top level).
            stop: ends the walk before an element whose tag it accepts.
        """
        implicit = self._implicit(pos, limit, implicit, depth)
        creators: dict[int, str] = {}
        while end is None or pos < end:
            head = self._header(pos, limit, implicit, little)
            if head is None:
                return limit
            tag, vr, length, size = head
            if stop is not None and stop(tag):
                return pos
            if tag == _ITEM_END:
                return pos + size
            self.elements += 1
            if self.elements > MAX_ELEMENTS:
                raise DicomTooComplexError(
                    f"The DICOM file holds more than {MAX_ELEMENTS:,} data elements; it is "
                    "refused unread (a radiograph has a few hundred)."
                )
            pos += size
            if depth == 0:
                self._note(tag, pos, length, limit)
            if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF and length != _UNDEFINED:
                creators[tag & 0xFFFF] = self._text(pos, length)  # a Private Creator
            pos = self._value(pos, tag, vr, length, limit, implicit, little, depth, creators)
        return pos

    def _implicit(self, pos: int, limit: int, implicit: bool, depth: int) -> bool:
        """Whether a data set is read as implicit VR: a sequence item of an implicit data
        set is; otherwise its first element decides (VR bytes not letters: implicit)."""
        if depth > 0 and implicit:
            return True
        if pos + 6 > limit:
            return implicit
        first, second = self.data[pos + 4], self.data[pos + 5]
        return not (0x40 < first < 0x5B and 0x40 < second < 0x5B)

    def _header(
        self, pos: int, limit: int, implicit: bool, little: bool
    ) -> tuple[int, bytes | None, int, int] | None:
        """``(tag, VR or None, value length, header size)`` of the element at ``pos``, or
        ``None`` where the bytes end first."""
        if pos + 8 > limit:
            return None
        implicit_header, explicit_header, long_length, _ = _STRUCTS[little]
        if not implicit:
            group, element, vr, length = explicit_header.unpack_from(self.data, pos)
            if vr in _LONG_VRS:
                if pos + 12 > limit:
                    return None
                return group << 16 | element, vr, long_length.unpack_from(self.data, pos + 8)[0], 12
            if vr in _KNOWN_VRS or b"AA" <= vr <= b"ZZ":  # an unknown VR has a 2-byte length
                return group << 16 | element, vr, length, 8
        group, element, length = implicit_header.unpack_from(self.data, pos)
        return group << 16 | element, None, length, 8

    def _note(self, tag: int, pos: int, length: int, limit: int) -> None:
        """Keep the Transfer Syntax UID and the instance's UIDs of a top-level element."""
        if tag not in _IDENTITY and tag != _TRANSFER_SYNTAX or length > 64 or pos + length > limit:
            return
        value = self._text(pos, length)
        if tag == _TRANSFER_SYNTAX:
            self.transfer_syntax = value
        elif _UID.fullmatch(value) and pydicom.uid.UID(value).is_valid:
            self.identity[tag] = value

    def _text(self, pos: int, length: int) -> str:
        """A short text value (a UID, a Private Creator), padding stripped."""
        return self.data[pos : pos + min(length, 64)].decode("latin-1").strip(" \x00")

    def _value(
        self,
        pos: int,
        tag: int,
        vr: bytes | None,
        length: int,
        limit: int,
        implicit: bool,
        little: bool,
        depth: int,
        creators: dict[int, str],
    ) -> int:
        """Walk one element's value from ``pos``; returns the position after it."""
        if length != _UNDEFINED:
            end = min(pos + length, limit)
            if self._is_sequence(tag, vr, creators):
                self._sequence(pos, end, end, implicit, little, depth + 1, tag)
            return end
        if (
            vr in (b"SQ", b"UN")
            or vr is None
            and self._undefined_is_sequence(tag, pos, limit, little)
        ):
            return self._sequence(pos, None, limit, implicit, little, depth + 1, tag)
        return self._undefined_value(pos, limit, little, tag)

    @staticmethod
    def _is_sequence(tag: int, vr: bytes | None, creators: dict[int, str]) -> bool:
        """Whether pydicom parses a defined-length value as a sequence: SQ, or an implicit
        VR or UN element that a data dictionary calls SQ."""
        if vr == b"SQ":
            return True
        if (vr is not None and vr != b"UN") or tag == _PIXEL_DATA:
            return False
        try:
            if tag >> 16 & 1:
                creator = creators.get(tag >> 8 & 0xFF)
                return bool(creator) and private_dictionary_VR(tag, creator) == "SQ"
            return dictionary_VR(tag) == "SQ"
        except KeyError:
            return False

    def _undefined_is_sequence(self, tag: int, pos: int, limit: int, little: bool) -> bool:
        """An implicit VR element of undefined length is a sequence where the dictionary
        says so or, for a tag it does not know, where an item follows."""
        try:
            return dictionary_VR(tag) == "SQ"
        except KeyError:
            return pos + 4 <= limit and _STRUCTS[little][3].unpack_from(self.data, pos) == (
                0xFFFE,
                0xE000,
            )

    def _sequence(
        self,
        pos: int,
        end: int | None,
        limit: int,
        implicit: bool,
        little: bool,
        depth: int,
        tag: int,
    ) -> int:
        """Walk a sequence's items (every 8-byte header is read as an item, as pydicom
        does); returns the position after it."""
        if depth > MAX_DEPTH:
            raise DicomTooComplexError(
                f"The DICOM file nests sequences more than {MAX_DEPTH} deep (at {_tag(tag)}); "
                "it is refused unread."
            )
        self.depth = max(self.depth, depth)
        item_header = _STRUCTS[little][0]
        while end is None or pos < end:
            if pos + 8 > limit:
                return limit
            group, element, length = item_header.unpack_from(self.data, pos)
            pos += 8
            if group << 16 | element == _SEQUENCE_END:
                return pos
            self._count_item(tag)
            item_end = None if length == _UNDEFINED else pos + length
            pos = self._dataset(pos, item_end, limit, implicit, little, depth)
        return pos

    def _undefined_value(self, pos: int, limit: int, little: bool, tag: int) -> int:
        """An undefined-length value that is not a sequence: encapsulated pixel data
        (fragments up to the Sequence Delimitation Item) or, where the bytes are not
        fragments, everything up to that delimiter."""
        start = pos
        item_header = _STRUCTS[little][0]
        while pos + 8 <= limit:
            group, element, length = item_header.unpack_from(self.data, pos)
            if group << 16 | element == _SEQUENCE_END:
                return pos + 8
            if group << 16 | element != _ITEM:
                break
            self._count_item(tag)
            pos += 8 + length
        found = self.data.find(_SEQUENCE_END_BYTES[little], start, limit)
        return limit if found < 0 else min(found + 8, limit)

    def _count_item(self, tag: int) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise DicomTooComplexError(
                f"The DICOM file holds more than {MAX_ITEMS:,} sequence items or pixel data "
                f"fragments (the limit was passed in {_tag(tag)}); it is refused unread."
            )


def inflate(deflated: bytes, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """A Deflated Explicit VR Little Endian data set (PS3.5 A.5) inflated, at most
    ``limit`` bytes.

    Raises:
        DicomTooComplexError: it inflates to more than ``limit`` bytes.
        CorruptImageError: it is not deflate data, or it is cut short.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(deflated, limit + 1)
    except zlib.error:
        raise CorruptImageError(
            "The DICOM file says its data set is deflated (Transfer Syntax UID (0002,0010) "
            "1.2.840.10008.1.2.1.99), but the data is not deflate data."
        ) from None
    if len(out) > limit:
        raise DicomTooComplexError(
            f"The deflated DICOM data set inflates to more than {limit // 2**20} MB; it is "
            "refused unread."
        )
    if not inflater.eof:
        raise CorruptImageError("The deflated DICOM data set is truncated.")
    return out


def scan(data: bytes) -> DicomScan:
    """Walk ``data`` and refuse it if its structure is beyond the limits.

    Returns:
        The finished :class:`DicomScan` (its counters).

    Raises:
        DicomTooComplexError: more than :data:`MAX_ELEMENTS` data elements,
            :data:`MAX_ITEMS` items or fragments, :data:`MAX_DEPTH` nested sequences, or
            a deflated data set beyond :data:`MAX_INFLATED_BYTES`.
        CorruptImageError: a deflated data set that does not inflate.
    """
    return DicomScan(data).run()


def identity(data: bytes) -> tuple[str | None, str | None]:
    """The SOP Class and SOP Instance UIDs a file states (its top-level elements, else its
    File Meta), read from its bytes without pydicom: they name a refused instance."""
    walk = DicomScan(data, stop_after_group=0x0008)
    try:
        walk.run()
    except PneumoError:
        pass  # a limit passed or no inflating: what was found before still names it
    found = walk.identity
    return (
        found.get(0x00080016) or found.get(0x00020002),
        found.get(0x00080018) or found.get(0x00020003),
    )


def reraise_interrupts(exc: BaseException) -> None:
    """Let Ctrl-C, interpreter exit and memory exhaustion through; everything else a
    reader raises is bad input."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)):
        raise exc


#: What each kind of parser failure means, in words (first match wins).
_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (RecursionError, "its sequences are nested too deeply"),
    (zlib.error, "its deflated data set is not valid deflate data"),
    (NotImplementedError, "an element has a Value Representation that is not DICOM"),
    (BytesLengthException, "a value's length does not fit its Value Representation"),
    (struct.error, "an element is cut short"),
    (EOFError, "it ends before its data elements are complete"),
)


def refusal(exc: BaseException) -> PneumoError:
    """The refusal that stands for an exception raised while parsing a DICOM file (the
    one mapping every reader uses); interrupts are raised again.

    Returns:
        ``exc`` itself where it already is a :class:`PneumoError`;
        :class:`UnsupportedImageError` where pydicom says it is not DICOM;
        :class:`CorruptImageError` (with the reason where one is known) for the rest.
    """
    reraise_interrupts(exc)
    if isinstance(exc, PneumoError):
        return exc
    if isinstance(exc, InvalidDicomError):
        return UnsupportedImageError(f"Not a readable DICOM file: {exc}")
    reason = next((words for kind, words in _FAILURES if isinstance(exc, kind)), None)
    return CorruptImageError(
        "The DICOM header could not be read; the file is truncated or "
        "damaged" + (f": {reason}." if reason else ".")
    )


def read_dataset(
    data: bytes, *, stop_before_pixels: bool = False, part10_only: bool = False
) -> pydicom.Dataset:
    """Parse untrusted DICOM bytes: :func:`scan` first, then pydicom, every element
    converted (sequences included) so that a damaged value fails here, not later.

    pydicom's warnings are kept here, never passed on. A file without the 128-byte
    preamble is read as a bare data set unless ``part10_only``.

    Args:
        data: the file's bytes.
        stop_before_pixels: leave Pixel Data out (a header read).
        part10_only: refuse a file without the preamble and "DICM" prefix (a
            DICOMweb instance must be a Part 10 file).

    Raises:
        DicomTooComplexError: its structure is beyond the limits of :func:`scan`.
        UnsupportedImageError: not DICOM.
        CorruptImageError: truncated or damaged, with the reason where one is known.
    """
    has_preamble = data[128:132] == b"DICM"
    if part10_only and not has_preamble:
        raise UnsupportedImageError(
            "Not a DICOM Part 10 instance: the 128-byte preamble and 'DICM' prefix are missing."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scan(data)
            ds = pydicom.dcmread(
                io.BytesIO(data), force=not has_preamble, stop_before_pixels=stop_before_pixels
            )
            for _ in ds.iterall():
                pass
        except PneumoError:
            raise
        except BaseException as exc:  # noqa: BLE001 - damaged files find odd corners
            raise refusal(exc) from exc
    ended_early = any("End of file" in str(w.message) for w in caught)
    pixel_tag_cut = not stop_before_pixels and "PixelData" not in ds and b"\xe0\x7f\x10\x00" in data
    if len(ds) == 0 or ended_early or pixel_tag_cut:
        raise CorruptImageError(
            "The DICOM file is truncated: it ends before its data elements are complete."
        )
    return ds
