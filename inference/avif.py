"""The size of the frame an AVIF file really codes, read from its AV1 bitstream before anything is decoded.

An AVIF file states its image size twice: in the container's ``ispe`` property and in the AV1 sequence
header inside the coded data. Pillow (through libavif) reports the first, but dav1d allocates and decodes
whatever the second says, so a few kilobytes can declare 100 x 100 while coding 16000 x 16000. This
module walks just enough of the ISO base media file format to find the coded data of every AV1 image
item (``meta``: ``pitm``, ``iinf``, ``iloc``, ``iprp``) and the first sample of every AV1 track
(``moov``: ``stsd``, ``stsz``, ``stco``), parses each sequence header's largest frame size, and compares
it with what the container declares. Nothing here allocates more than the file itself. The same walk
counts the items of a HEIF file (:func:`item_count`).
"""

from __future__ import annotations

from dataclasses import dataclass

# OBU types of the AV1 bitstream (AV1 specification, section 6.2.2).
OBU_SEQUENCE_HEADER = 1
OBU_FRAME_HEADER = 3
OBU_FRAME = 6
# A file deeper than this, or with more boxes than this, is not a photo anyone took.
MAX_BOX_DEPTH = 8
MAX_BOXES = 10_000
CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"iprp", b"ipco", b"dinf"}


class AvifSizeError(ValueError):
    """The file's AV1 data cannot be followed, or contradicts the size the container declares."""


@dataclass
class AvifFrames:
    """What an AVIF file codes, as far as the size of its decoded pixels goes.

    Attributes:
        size: ``(width, height)`` the decoder will produce for the displayed image: the coded frame of
            the primary item (or the first sample of the track), or a grid's canvas.
        largest_coded: Pixels of the largest AV1 frame anywhere in the file (tiles, alpha, tracks).
        declared: ``(width, height)`` the container declares for the same image (``ispe`` or sample entry).
    """

    size: tuple[int, int]
    largest_coded: int
    declared: tuple[int, int] | None = None


class _Bits:
    """Big-endian bit reader over bytes (the AV1 ``f(n)`` and ``uvlc()`` descriptors)."""

    def __init__(self, data: bytes):
        self.data, self.position = data, 0

    def f(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self.position >> 3
            if byte >= len(self.data):
                raise AvifSizeError("sequence header cut short")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.position & 7))) & 1)
            self.position += 1
        return value

    def uvlc(self) -> int:
        zeros = 0
        while not self.f(1):
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return self.f(zeros) + (1 << zeros) - 1


def sequence_header_size(payload: bytes) -> tuple[int, int]:
    """``(max_frame_width, max_frame_height)`` of an AV1 sequence header OBU's payload.

    Every frame of the sequence is at most this large (AV1 specification, section 5.5), so it bounds
    what the decoder allocates.
    """
    bits = _Bits(payload)
    bits.f(3)  # seq_profile
    bits.f(1)  # still_picture
    if bits.f(1):  # reduced_still_picture_header
        bits.f(5)  # seq_level_idx[0]
    else:
        decoder_model_info = False
        if bits.f(1):  # timing_info_present_flag
            bits.f(32), bits.f(32)
            if bits.f(1):  # equal_picture_interval
                bits.uvlc()
            decoder_model_info = bool(bits.f(1))
            if decoder_model_info:
                buffer_delay_length = bits.f(5) + 1
                bits.f(32), bits.f(5), bits.f(5)
        initial_display_delay = bits.f(1)
        for _ in range(bits.f(5) + 1):  # operating points
            bits.f(12)
            if bits.f(5) > 7:  # seq_level_idx
                bits.f(1)
            if decoder_model_info and bits.f(1):
                bits.f(buffer_delay_length), bits.f(buffer_delay_length), bits.f(1)
            if initial_display_delay and bits.f(1):
                bits.f(4)
    width_bits, height_bits = bits.f(4) + 1, bits.f(4) + 1
    return bits.f(width_bits) + 1, bits.f(height_bits) + 1


def _leb128(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for index in range(8):
        if position + index >= len(data):
            raise AvifSizeError("OBU size cut short")
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, position + index + 1
    raise AvifSizeError("OBU size too long")


def coded_frame_sizes(obus: bytes) -> list[tuple[int, int]]:
    """The frame size of every sequence header in a run of AV1 OBUs (an item's data, a sample, ``av1C``)."""
    sizes, position = [], 0
    while position < len(obus):
        header = obus[position]
        obu_type, has_extension, has_size = (header >> 3) & 0x0F, header & 0x04, header & 0x02
        position += 2 if has_extension else 1
        if has_size:
            length, position = _leb128(obus, position)
        else:
            length = len(obus) - position
        if position + length > len(obus):
            raise AvifSizeError("OBU runs past its data")
        if obu_type == OBU_SEQUENCE_HEADER:
            sizes.append(sequence_header_size(obus[position:position + length]))
        position += length
    return sizes


def _boxes(data: bytes, start: int, end: int, depth: int, counter: list[int]):
    """``(type, payload start, payload end)`` of the boxes between ``start`` and ``end``."""
    if depth > MAX_BOX_DEPTH:
        raise AvifSizeError("boxes nested too deep")
    position = start
    while position + 8 <= end:
        counter[0] += 1
        if counter[0] > MAX_BOXES:
            raise AvifSizeError("too many boxes")
        size, kind = int.from_bytes(data[position:position + 4], "big"), data[position + 4:position + 8]
        header = 8
        if size == 1:
            if position + 16 > end:
                raise AvifSizeError("box cut short")
            size, header = int.from_bytes(data[position + 8:position + 16], "big"), 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise AvifSizeError(f"box {kind!r} runs past its parent")
        yield kind, position + header, position + size
        position += size


def _children(data: bytes, start: int, end: int, depth: int, counter: list[int]) -> dict[bytes, list[tuple[int, int]]]:
    found: dict[bytes, list[tuple[int, int]]] = {}
    for kind, begin, finish in _boxes(data, start, end, depth, counter):
        found.setdefault(kind, []).append((begin, finish))
    return found


def _uint(data: bytes, position: int, size: int) -> int:
    if size == 0:
        return 0
    if position + size > len(data):
        raise AvifSizeError("field cut short")
    return int.from_bytes(data[position:position + size], "big")


class _Meta:
    """The parts of a ``meta`` box that locate and describe image items."""

    def __init__(self, data: bytes, start: int, end: int, counter: list[int]):
        self.data = data
        boxes = _children(data, start + 4, end, 1, counter)  # meta is a full box
        self.primary = self._primary(boxes)
        self.types = self._types(boxes)
        self.locations = self._locations(boxes)
        self.idat = boxes.get(b"idat", [None])[0]
        self.properties, self.associations = self._properties(boxes, counter)

    def _primary(self, boxes) -> int | None:
        if b"pitm" not in boxes:
            return None
        start, _ = boxes[b"pitm"][0]
        return _uint(self.data, start + 4, 2 if self.data[start] == 0 else 4)

    def _types(self, boxes) -> dict[int, bytes]:
        types: dict[int, bytes] = {}
        if b"iinf" not in boxes:
            return types
        start, end = boxes[b"iinf"][0]
        offset = start + 4 + (2 if self.data[start] == 0 else 4)
        for kind, begin, finish in _boxes(self.data, offset, end, 2, [0]):
            if kind != b"infe" or self.data[begin] < 2:
                continue
            id_size = 2 if self.data[begin] == 2 else 4
            item = _uint(self.data, begin + 4, id_size)
            types[item] = self.data[begin + 4 + id_size + 2:begin + 4 + id_size + 6]
        return types

    def _locations(self, boxes) -> dict[int, tuple[int, list[tuple[int, int]]]]:
        """Item id -> (construction method, [(offset, length)])."""
        locations: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        if b"iloc" not in boxes:
            return locations
        data = self.data
        start, _ = boxes[b"iloc"][0]
        version = data[start]
        offset_size, length_size = data[start + 4] >> 4, data[start + 4] & 0x0F
        base_offset_size, index_size = data[start + 5] >> 4, data[start + 5] & 0x0F
        if version not in (1, 2):
            index_size = 0
        position = start + 6
        count_size = 2 if version < 2 else 4
        count = _uint(data, position, count_size)
        position += count_size
        for _ in range(count):
            item = _uint(data, position, count_size)
            position += count_size
            method = 0
            if version in (1, 2):
                method = _uint(data, position, 2) & 0x0F
                position += 2
            position += 2  # data_reference_index
            base = _uint(data, position, base_offset_size)
            position += base_offset_size
            extent_count = _uint(data, position, 2)
            position += 2
            extents = []
            for _ in range(extent_count):
                position += index_size
                extent_offset = _uint(data, position, offset_size)
                position += offset_size
                extents.append((base + extent_offset, _uint(data, position, length_size)))
                position += length_size
            locations[item] = (method, extents)
        return locations

    def _properties(self, boxes, counter) -> tuple[list[tuple[bytes, int, int]], dict[int, list[int]]]:
        properties: list[tuple[bytes, int, int]] = []
        associations: dict[int, list[int]] = {}
        if b"iprp" not in boxes:
            return properties, associations
        start, end = boxes[b"iprp"][0]
        iprp = _children(self.data, start, end, 2, counter)
        if b"ipco" in iprp:
            properties = list(_boxes(self.data, *iprp[b"ipco"][0], 3, counter))
        for begin, _ in iprp.get(b"ipma", []):
            version, flags = self.data[begin], self.data[begin + 3]
            position = begin + 4
            count = _uint(self.data, position, 4)
            position += 4
            id_size, width = (2 if version < 1 else 4), (2 if flags & 1 else 1)
            for _ in range(count):
                item = _uint(self.data, position, id_size)
                position += id_size
                associated = _uint(self.data, position, 1)
                position += 1
                indices = []
                for _ in range(associated):
                    indices.append(_uint(self.data, position, width) & (0x7FFF if width == 2 else 0x7F))
                    position += width
                associations[item] = indices
        return properties, associations

    def item_data(self, item: int, file_size: int) -> bytes:
        method, extents = self.locations.get(item, (0, []))
        if method == 1:
            if self.idat is None:
                raise AvifSizeError("item data in a missing idat box")
            base, limit = self.idat
        elif method == 0:
            base, limit = 0, file_size
        else:
            raise AvifSizeError("item data by reference to another item")
        pieces = []
        for offset, length in extents:
            begin = base + offset
            finish = limit if length == 0 else begin + length
            if begin > limit or finish > limit:
                raise AvifSizeError("item data outside the file")
            pieces.append(self.data[begin:finish])
        return b"".join(pieces)

    def property(self, item: int, kind: bytes) -> tuple[int, int] | None:
        for index in self.associations.get(item, []):
            if 1 <= index <= len(self.properties) and self.properties[index - 1][0] == kind:
                return self.properties[index - 1][1:]
        return None

    def ispe(self, item: int) -> tuple[int, int] | None:
        found = self.property(item, b"ispe")
        if found is None:
            return None
        start, _ = found
        return _uint(self.data, start + 4, 4), _uint(self.data, start + 8, 4)

    def av1c_sizes(self, item: int) -> list[tuple[int, int]]:
        found = self.property(item, b"av1C")
        return coded_frame_sizes(self.data[found[0] + 4:found[1]]) if found else []


def _item_frames(meta: _Meta, file_size: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None, int]:
    """(primary size, primary declared size, largest coded pixels) from the image items."""
    largest = 0
    coded: dict[int, tuple[int, int]] = {}
    for item, kind in meta.types.items():
        if kind != b"av01":
            continue
        sizes = coded_frame_sizes(meta.item_data(item, file_size)) + meta.av1c_sizes(item)
        if sizes:
            coded[item] = max(sizes, key=lambda size: size[0] * size[1])
            largest = max(largest, coded[item][0] * coded[item][1])
    primary = meta.primary
    if primary is None or primary not in meta.types:
        return None, None, largest
    declared = meta.ispe(primary)
    if meta.types[primary] == b"av01":
        if primary not in coded:
            raise AvifSizeError("the primary image has no AV1 sequence header")
        return coded[primary], declared, largest
    if meta.types[primary] == b"grid":
        grid = meta.item_data(primary, file_size)
        if len(grid) < 8:
            raise AvifSizeError("grid description cut short")
        field_size = 4 if grid[1] & 1 else 2
        canvas = (_uint(grid, 4, field_size), _uint(grid, 4 + field_size, field_size))
        return canvas, declared, largest
    return None, declared, largest


def _track_frames(data: bytes, moov: tuple[int, int], counter: list[int]) -> tuple[tuple[int, int] | None,
                                                                                   tuple[int, int] | None, int]:
    """(first track's first-sample size, its sample entry size, largest coded pixels) of AV1 tracks."""
    first, first_declared, largest = None, None, 0
    for trak_start, trak_end in _children(data, *moov, 1, counter).get(b"trak", []):
        mdia = _children(data, trak_start, trak_end, 2, counter).get(b"mdia", [])
        minf = _children(data, *mdia[0], 3, counter).get(b"minf", []) if mdia else []
        stbl = _children(data, *minf[0], 4, counter).get(b"stbl", []) if minf else []
        if not stbl:
            continue
        tables = _children(data, *stbl[0], 5, counter)
        if b"stsd" not in tables:
            continue
        stsd_start, stsd_end = tables[b"stsd"][0]
        entries = list(_boxes(data, stsd_start + 8, stsd_end, 6, counter))
        if not entries or entries[0][0] != b"av01":
            continue
        _, entry_start, entry_end = entries[0]
        declared = (_uint(data, entry_start + 24, 2), _uint(data, entry_start + 26, 2))
        sizes = []
        for kind, begin, finish in _boxes(data, entry_start + 78, entry_end, 7, counter):
            if kind == b"av1C":
                sizes += coded_frame_sizes(data[begin + 4:finish])
        sample = _first_sample(data, tables)
        if sample is not None:
            sizes += coded_frame_sizes(sample)
        if not sizes:
            raise AvifSizeError("an AV1 track without a sequence header")
        size = max(sizes, key=lambda value: value[0] * value[1])
        largest = max(largest, size[0] * size[1])
        if first is None:
            first, first_declared = size, declared
    return first, first_declared, largest


def _first_sample(data: bytes, tables) -> bytes | None:
    if b"stsz" not in tables or not (b"stco" in tables or b"co64" in tables):
        return None
    stsz_start, _ = tables[b"stsz"][0]
    size = _uint(data, stsz_start + 4, 4) or _uint(data, stsz_start + 12, 4)
    if b"stco" in tables:
        offset = _uint(data, tables[b"stco"][0][0] + 8, 4)
    else:
        offset = _uint(data, tables[b"co64"][0][0] + 8, 8)
    if offset + size > len(data):
        raise AvifSizeError("first sample outside the file")
    return data[offset:offset + size]


def avif_frames(data: bytes) -> AvifFrames | None:
    """The real frame sizes of an AVIF file, or ``None`` when the file holds no AV1 image.

    Args:
        data: The whole file (an ISO base media file: it starts with an ``ftyp`` box).

    Returns:
        The frames, or ``None`` for a file with no AV1 item or track (a HEIC, or not such a file at all).

    Raises:
        AvifSizeError: The boxes or the sequence headers cannot be followed.
    """
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    try:
        return _avif_frames(data)
    except (IndexError, ValueError) as exc:  # a field read past its box: the file cannot be followed
        raise AvifSizeError(str(exc) or "boxes cut short") from None


def _avif_frames(data: bytes) -> AvifFrames | None:
    counter = [0]
    top = _children(data, 0, len(data), 0, counter)
    brand = data[8:12]
    items = tracks = (None, None, 0)
    if b"meta" in top:
        meta = _Meta(data, *top[b"meta"][0], counter)
        if b"av01" in meta.types.values():
            items = _item_frames(meta, len(data))
    if b"moov" in top:
        tracks = _track_frames(data, top[b"moov"][0], counter)
    largest = max(items[2], tracks[2])
    if not largest and items[0] is None:
        return None
    # libavif's automatic choice: the track for an image sequence brand (or when there is no item).
    use_track = tracks[0] is not None and (brand == b"avis" or items[0] is None)
    size, declared = (tracks[0], tracks[1]) if use_track else (items[0], items[1])
    if size is None:
        raise AvifSizeError("no AV1 image the decoder would show")
    return AvifFrames(size=size, largest_coded=largest, declared=declared)


def item_count(data: bytes) -> int | None:
    """How many items (images, tiles, metadata) the ``meta`` box of a HEIF or AVIF file lists.

    libheif refuses a file of more than 1,000 items before Pillow sees it; this tells such a file (an
    image collection too large to take) from a damaged one.

    Returns:
        The number of ``infe`` boxes in ``iinf``, or ``None`` when the boxes cannot be followed.
    """
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    try:
        counter = [0]
        top = _children(data, 0, len(data), 0, counter)
        if b"meta" not in top:
            return None
        start, end = top[b"meta"][0]
        meta = _children(data, start + 4, end, 1, counter)
        if b"iinf" not in meta:
            return None
        iinf_start, iinf_end = meta[b"iinf"][0]
        offset = iinf_start + 4 + (2 if data[iinf_start] == 0 else 4)
        return sum(1 for kind, _, _ in _boxes(data, offset, iinf_end, 2, [0]) if kind == b"infe")
    except (IndexError, ValueError):
        return None
