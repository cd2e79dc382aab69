"""Built-in samplers: ``with_replacement`` and ``without_replacement``."""

from ats.core.sampling import WithoutReplacement, WithReplacement
from ats.registry import sampler

sampler.add("with_replacement", WithReplacement)
sampler.add("without_replacement", WithoutReplacement)
