"""The model plugins ``ats`` (attention sampling) and ``cnn_low`` / ``cnn_full``
(a CNN on one whole view), built from the task's networks."""

from __future__ import annotations

from typing import Any

from ats.classifier import ATSClassifier, Classifier, CNNClassifier
from ats.config import RunConfig
from ats.contracts import check_feature_network
from ats.core.model import AttentionSampling
from ats.models import ModelPlugin
from ats.registry import model

__all__ = ["ATSModel", "CNNFullModel", "CNNLowModel"]


@model.register("ats")
class ATSModel(ModelPlugin):
    """Attention sampling (Katharopoulos & Fleuret, ICML 2019): N patches drawn
    from an attention distribution on the low view, an unbiased estimate."""

    def build(self, task: Any, config: RunConfig, options: Any) -> Classifier:
        feature = task.feature_network(config)
        ats = AttentionSampling(
            task.attention_network(config),
            feature,
            n_patches=config.n_patches,
            patch_size=config.patch_size,
            receptive_field=config.receptive_field,
            sampler=task.sampler(config),
            extractor=config.extractor,
            smoothing=config.smoothing,
        )
        return ATSClassifier(ats, feature_dim=feature.out_features,
                             num_classes=task.num_classes, head_gain=config.head_gain,
                             patch_logits=config.patch_loss > 0)


class _CNNModel(ModelPlugin):
    view = "low"

    def build(self, task: Any, config: RunConfig, options: Any) -> Classifier:
        network = check_feature_network(task.baseline_network(config, self.view),
                                        f"the {config.model} network")
        return CNNClassifier(network, feature_dim=network.out_features,
                             num_classes=task.num_classes, view=self.view,
                             head_gain=config.head_gain)


@model.register("cnn_low")
class CNNLowModel(_CNNModel):
    """The task's CNN on the whole low-resolution view."""

    view = "low"


@model.register("cnn_full")
class CNNFullModel(_CNNModel):
    """The task's CNN on the whole full-resolution image."""

    view = "full"
