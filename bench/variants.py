"""What a benchmark compares within one run: backends, and optionally an older checkout's code.

    --backend sqlite,postgres      the embedded default and the production configuration
    --vs-code ../old               each round again on the code of another checkout (its
                                   `tenant_pipelines` and `resources` first on PYTHONPATH for the
                                   whole stack), so before/after pairs share the machine's moment

Rounds interleave the variants (round 1 of each, then round 2 of each, ...): a machine that
drifts during the run moves every variant alike.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.postgres import BACKENDS, backend_env


@dataclass(frozen=True)
class Variant:
    backend: str
    code: Path | None = None  # None: this checkout

    @property
    def label(self) -> str:
        return self.backend if self.code is None else f"{self.backend} @ {self.code.name}"


def variants(backends: str, vs_code: str | None) -> list[Variant]:
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown or not chosen:
        raise SystemExit(
            f"--backend takes {', '.join(BACKENDS)} (comma-separated), not {backends!r}"
        )
    codes: list[Path | None] = [None]
    if vs_code:
        other = Path(vs_code).resolve()
        if not (other / "tenant_pipelines").is_dir():
            raise SystemExit(f"--vs-code {vs_code}: no tenant_pipelines package there")
        codes.append(other)
    return [Variant(backend, code) for backend in chosen for code in codes]


@contextmanager
def variant_env(variant: Variant) -> Iterator[dict[str, str]]:
    """The stack's extra environment for `variant` (databases made and dropped around it)."""
    with backend_env(variant.backend) as env:
        if variant.code is not None:
            env = {**env, "PYTHONPATH": str(variant.code)}
        yield env
