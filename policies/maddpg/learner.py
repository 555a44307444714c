"""`MADDPGLearner`: the framework-neutral part of MADDPG's learner: soft target updates and metric names."""

from __future__ import annotations

from typing import Any

from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.learner.utils import update_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import NUM_TARGET_UPDATES

QF_LOSS_KEY = "qf_loss"
QF_MEAN_KEY = "qf_mean"
TD_ERROR_MEAN_KEY = "td_error_mean"
ACTION_ABS_MEAN_KEY = "action_abs_mean"
QF_OPTIMIZER = "qf"  # the critic's optimizer
QF_TWIN_OPTIMIZER = "qf_twin"  # the twin critic's (with twin_q)
POLICY_OPTIMIZER = "policy"  # the actor's optimizer


class MADDPGLearner(Learner):
    """Polyak-averages every module's target actor and critic after each gradient update."""

    @override(Learner)
    def build(self) -> None:
        super().build()
        self.module.foreach_module(
            lambda mid, mod: mod.make_target_networks() if isinstance(mod, TargetNetworkAPI) else None
        )

    @override(Learner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        """theta' <- tau * theta + (1 - tau) * theta' (Lowe et al. 2017, Algorithm 1, last line)."""
        super().after_gradient_based_update(timesteps=timesteps)
        for module_id, module in self.module._rl_modules.items():
            config = self.config.get_config_for_module(module_id)
            for main_net, target_net in module.unwrapped().get_target_network_pairs():
                update_target_network(main_net=main_net, target_net=target_net, tau=config.tau)
            self.metrics.log_value((module_id, NUM_TARGET_UPDATES), 1, reduce="lifetime_sum")

    @classmethod
    @override(Learner)
    def rl_module_required_apis(cls) -> list[type]:
        return [TargetNetworkAPI]
