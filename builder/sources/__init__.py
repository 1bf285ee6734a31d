"""Source adapters, chosen by the ``format`` of a source spec."""

from __future__ import annotations

from builder.records import SourceSpec
from builder.sources.base import Adapter
from builder.sources.folder2d import Folder2dAdapter
from builder.sources.medsegbench import MedsegbenchAdapter
from builder.sources.msd import MsdAdapter
from builder.sources.nnunet import NnunetAdapter
from builder.sources.samed2d import Samed2dAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    cls.format: cls for cls in (MsdAdapter, NnunetAdapter, Folder2dAdapter, Samed2dAdapter, MedsegbenchAdapter)
}


def adapter_for(spec: SourceSpec) -> Adapter:
    try:
        return ADAPTERS[spec.format](spec)
    except KeyError:
        raise ValueError(f"source '{spec.name}': unknown format '{spec.format}' "
                         f"(known: {', '.join(sorted(ADAPTERS))})") from None
