"""ats: attention sampling for megapixel images in PyTorch.

Katharopoulos & Fleuret, "Processing Megapixel Images with Deep
Attention-Sampling Models", ICML 2019. The public API::

    from ats import AttentionSampling, extract_patches, registry
    model = AttentionSampling(attention_net, feature_net, n_patches=10, patch_size=50)
    out = model(x_low, x_high)  # out.features, out.attention, out.patches, ...

Importing ``ats`` loads torch and the core modules only; plugins (and numba)
are loaded on first use.
"""

from ats import registry
from ats.core.distribution import attention_softmax
from ats.core.expectation import expected_with_replacement, expected_without_replacement
from ats.core.extract import Extractor, extract_patches, get_extractor
from ats.core.geometry import patch_offsets
from ats.core.model import ATSOutput, AttentionSampling
from ats.core.regularizers import attention_entropy, entropy_regularizer
from ats.core.sampling import Sampler, Samples, WithoutReplacement, WithReplacement
from ats.registry import Registry, load_plugins

__version__ = "0.1.0"

__all__ = [
    "ATSOutput",
    "AttentionSampling",
    "Extractor",
    "Registry",
    "Sampler",
    "Samples",
    "WithReplacement",
    "WithoutReplacement",
    "attention_entropy",
    "attention_softmax",
    "entropy_regularizer",
    "expected_with_replacement",
    "expected_without_replacement",
    "extract_patches",
    "get_extractor",
    "load_plugins",
    "patch_offsets",
    "registry",
]
