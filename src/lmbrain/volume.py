"""Voxel spaces: map response columns to 3-D voxels and back to NIfTI images.

A response matrix has one column per voxel inside a brain mask. Two column orders are in use:

- ``"pycortex"``: the LeBel et al. 2023 release (and pycortex in general) stores masks as
  (z, y, x) arrays and numbers voxels in C order of that array. In nibabel's (x, y, z)
  orientation this is Fortran order.
- ``"nilearn"``: BIDS/nilearn convention, C order of nibabel's (x, y, z) array.

:class:`VoxelSpace` keeps the mask in nibabel orientation plus the order, so both give NIfTI
output in the subject's space.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from . import LmbrainError
from .io import atomic_path

ORDERS = {"pycortex": "F", "nilearn": "C"}


@dataclass
class VoxelSpace:
    """A boolean brain mask in nibabel (x, y, z) orientation, its affine and the column order.

    Attributes
    ----------
    mask : bool array, shape (X, Y, Z)
    affine : float array, shape (4, 4)
    order : {"pycortex", "nilearn"}
    source : str
        The file the mask came from (for messages).
    """

    mask: np.ndarray
    affine: np.ndarray
    order: str = "pycortex"
    source: str = ""

    def __post_init__(self):
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim != 3:
            raise LmbrainError(f"{self.source or 'mask'}: a brain mask must be 3-D, got shape {self.mask.shape}")
        if self.order not in ORDERS:
            raise LmbrainError(f"unknown voxel order {self.order!r}; use one of {sorted(ORDERS)}")
        self.affine = np.asarray(self.affine, dtype=float)

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())

    def indices(self) -> np.ndarray:
        """(n_voxels, 3) integer (x, y, z) indices of the columns, in column order."""
        flat = np.flatnonzero(self.mask.ravel(order=ORDERS[self.order]))
        return np.stack(np.unravel_index(flat, self.mask.shape, order=ORDERS[self.order]), axis=1)

    def coordinates(self) -> np.ndarray:
        """(n_voxels, 3) world coordinates (mm) of the voxel centres, in column order."""
        ijk = self.indices()
        return nib.affines.apply_affine(self.affine, ijk)

    def mask_columns(self, volume: np.ndarray) -> np.ndarray:
        """Take the in-mask voxels of a 3-D (X, Y, Z) or 4-D (X, Y, Z, T) array -> (n_voxels,) or (T, n_voxels)."""
        volume = np.asarray(volume)
        if volume.shape[:3] != self.mask.shape:
            raise LmbrainError(
                f"volume of shape {volume.shape[:3]} does not match the mask {self.source} of shape {self.mask.shape}"
            )
        ijk = self.indices()
        cols = volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        return cols.T if cols.ndim == 2 else cols

    def unmask(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Put column values back into the volume: (n_voxels,) -> (X, Y, Z); (n, n_voxels) -> (X, Y, Z, n)."""
        values = np.asarray(values)
        if values.shape[-1] != self.n_voxels:
            raise LmbrainError(
                f"{values.shape[-1]} values for a mask with {self.n_voxels} voxels ({self.source})"
            )
        ijk = self.indices()
        if values.ndim == 1:
            out = np.full(self.mask.shape, fill, dtype=np.float32)
            out[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = values
        else:
            out = np.full(self.mask.shape + (values.shape[0],), fill, dtype=np.float32)
            out[ijk[:, 0], ijk[:, 1], ijk[:, 2], :] = values.T
        return out

    def to_nifti(self, values: np.ndarray, fill: float = np.nan) -> nib.Nifti1Image:
        """A NIfTI image in the subject's space holding ``values`` (see :meth:`unmask`)."""
        return nib.Nifti1Image(self.unmask(values, fill), self.affine)

    def save_nifti(self, values: np.ndarray, path: str | os.PathLike, fill: float = np.nan) -> None:
        """Write ``values`` as a NIfTI image, atomically."""
        img = self.to_nifti(values, fill)
        with atomic_path(path) as tmp:
            nib.save(img, tmp)

    @classmethod
    def from_nifti(cls, path: str | os.PathLike, order: str) -> "VoxelSpace":
        """Read a mask image (non-zero voxels are in the mask).

        Raises
        ------
        LmbrainError
            Naming ``path``: the file is missing or not readable as NIfTI (truncated, not gzip, ...),
            it is not 3-D (a 4-D image with one volume is accepted), it holds NaN or infinite values
            (whether those are in the mask is ambiguous), or no voxel is non-zero.
        """
        path = Path(path)
        if not path.exists():
            raise LmbrainError(f"{path}: brain mask not found")
        try:
            img = nib.load(path)
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # nibabel raises many types for corrupt files
            raise LmbrainError(f"{path}: cannot read the brain mask as NIfTI ({type(exc).__name__}: {exc})") from None
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.dtype.kind in "fc" and not np.isfinite(data).all():
            raise LmbrainError(f"{path}: the brain mask holds {int((~np.isfinite(data)).sum())} NaN or infinite values; "
                               "a mask must be 0 outside the brain and non-zero inside")
        space = cls(mask=data != 0, affine=img.affine, order=order, source=str(path))
        if space.n_voxels == 0:
            raise LmbrainError(f"{path}: the brain mask is empty (every voxel is 0); a mask must be non-zero inside the brain")
        return space
