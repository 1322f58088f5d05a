"""Thin disks: guest writes allocate host space as a qcow2 image does.

A :class:`ThinDisk` has a *capacity* (the size the guest sees), an *allocation* (the
highest host offset written: the end of the image's used part) and a *physical* size
(the image file, or the block device under it). New data clusters of 64 KiB are appended
at the end of the image, after an L2 table cluster when a write is the first into a
512 MiB region (one L2 table of a 64 KiB-cluster qcow2 maps 512 MiB); rewriting
allocated clusters allocates nothing. A file grows with its allocation; a block device
(``grows=False``) has a fixed physical size, and a write that would need more fails
with :class:`NoSpace` (qemu reports ENOSPC and pauses the guest).

A block threshold is compared with the host offsets a write touches, as qemu compares
``block-set-write-threshold`` with the writes on the image's storage node: the write
fires it when it ends past the threshold, with ``excess = end - threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLUSTER_SIZE = 64 * 1024
L2_REGION = CLUSTER_SIZE * (CLUSTER_SIZE // 8)  # guest bytes mapped by one L2 table
NEW_IMAGE_SIZE = 4 * CLUSTER_SIZE  # a fresh qcow2: header, refcount table and block, L1 table

__all__ = ["CLUSTER_SIZE", "NEW_IMAGE_SIZE", "NoSpace", "ThinDisk", "WriteResult"]


class NoSpace(Exception):
    """The write needs more host space than the block device has (ENOSPC)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    end: int  # highest host offset the write reached
    allocated: int  # host bytes newly allocated


@dataclass(eq=False)
class ThinDisk:
    """One disk image of a mock domain; see the module docstring."""

    target: str  # "vda"
    path: str | None
    capacity: int
    format: str = "qcow2"
    grows: bool = True  # a file; False: a block device of fixed physical size
    physical: int = 0
    allocation: int = NEW_IMAGE_SIZE
    preallocated: bool = False  # every cluster allocated in guest order (no growth)
    threshold: int = 0  # 0: unset
    threshold_indexed: bool = False  # set as "vda[N]": fire only the indexed event
    rd_reqs: int = 0
    rd_bytes: int = 0
    wr_reqs: int = 0
    wr_bytes: int = 0
    _clusters: dict[int, int] = field(default_factory=dict, repr=False)  # guest -> host
    _l2_tables: set[int] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.physical = max(self.physical, self.allocation)

    def write(self, offset: int, length: int) -> WriteResult:
        """The guest writes ``length`` bytes at ``offset``: allocate, count, return.

        Raises ValueError for a range outside the disk, NoSpace (and changes nothing)
        when a block device is too small.
        """
        if offset < 0 or length <= 0 or offset + length > self.capacity:
            raise ValueError(
                f"write of {length} bytes at {offset} is outside the disk "
                f"({self.capacity} bytes)"
            )
        if self.preallocated:
            metadata = self.allocation - self.capacity
            result = WriteResult(metadata + offset + length, 0)
        else:
            result = self._allocate(offset, length)
        self.wr_reqs += 1
        self.wr_bytes += length
        return result

    def _allocate(self, offset: int, length: int) -> WriteResult:
        end = 0
        allocation = self.allocation
        new_clusters: dict[int, int] = {}
        new_tables: set[int] = set()
        for cluster in range(offset // CLUSTER_SIZE, (offset + length - 1) // CLUSTER_SIZE + 1):
            host = self._clusters.get(cluster)
            if host is None:  # a new cluster is written whole (copy-on-write)
                region = cluster * CLUSTER_SIZE // L2_REGION
                if region not in self._l2_tables and region not in new_tables:
                    new_tables.add(region)
                    allocation += CLUSTER_SIZE
                new_clusters[cluster] = allocation
                allocation += CLUSTER_SIZE
                end = max(end, allocation)
            else:
                start = cluster * CLUSTER_SIZE
                end = max(end, host + min(offset + length, start + CLUSTER_SIZE) - start)
        if allocation > self.physical and not self.grows:
            raise NoSpace(
                f"{self.target}: the write needs {allocation} bytes of the device's "
                f"{self.physical}"
            )
        allocated = allocation - self.allocation
        self._clusters.update(new_clusters)
        self._l2_tables |= new_tables
        self.allocation = allocation
        self.physical = max(self.physical, allocation)
        return WriteResult(end, allocated)

    def grow(self, physical: int) -> None:
        """Set the physical size (a block device was extended); never below allocation."""
        if physical < self.allocation:
            raise ValueError(
                f"{self.target}: physical size {physical} is below the allocation "
                f"{self.allocation}"
            )
        self.physical = physical

    def take_threshold(self, end: int) -> tuple[int, int] | None:
        """If a write ending at host offset ``end`` passes the threshold: clear it
        (it is one-shot) and return (threshold, excess)."""
        threshold = self.threshold
        if not threshold or end <= threshold:
            return None
        self.threshold = 0
        return threshold, end - threshold
