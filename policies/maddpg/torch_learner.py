"""`MADDPGTorchLearner`: MADDPG's losses, read off Lowe et al., NeurIPS 2017 (arXiv:1706.02275).

For each agent i, with x = (o_1, ..., o_N) and a batch of joint transitions (x, a, r, x'):

    critic (eq. 6):  L(theta_i) = E[(Q_i(x, a_1..a_N) - y)^2],
                     y = r_i + gamma * Q'_i(x', a'_1..a'_N) |_{a'_j = mu'_j(o'_j)}
    actor  (eq. 5):  grad J(mu_i) = E[grad mu_i(o_i) * grad_{a_i} Q_i(x, a_1..a_N) |_{a_i = mu_i(o_i)}]

The other agents' actions in the actor's loss are the ones in the buffer, as in the
paper. The critic and the actor of each agent have their own named optimizers
("qf", "policy"); each loss moves only its own network's parameters.

With `twin_q` (MATD3, Ackermann et al. 2019) a second critic learns the same target,
y uses min(Q'_i, Q'twin_i), and the actors update every `policy_delay` steps. The
actors stay put for the first `actor_warmup_updates` updates: a critic that has not
yet learnt the level of the returns extrapolates optimistically into actions the
buffer rarely holds, and an actor following it drives there.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY, Learner
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import ModuleID, ParamDict, TensorType

from policies.maddpg.learner import (
    ACTION_ABS_MEAN_KEY,
    POLICY_OPTIMIZER,
    QF_LOSS_KEY,
    QF_MEAN_KEY,
    QF_OPTIMIZER,
    QF_TWIN_OPTIMIZER,
    TD_ERROR_MEAN_KEY,
    MADDPGLearner,
)
from policies.maddpg.replay import TRANSITION_ID, AlignmentError
from policies.maddpg.rl_module import ACTIONS_NEXT_TARGET, ACTIONS_PI, ACTIONS_PI_PRE

CRITIC_UPDATES_KEY = "maddpg_critic_updates"


def joint(batch: dict[str, dict[str, Any]], agents: list[str], column: str) -> torch.Tensor:
    """One column of every agent's batch, concatenated along features in the agents' order: x or a."""
    return torch.cat([batch[a][column] for a in agents], dim=-1)


def check_aligned(batch: dict[str, dict[str, Any]], agents: list[str]) -> None:
    """Every agent's row k must come from the same env step, else the critic would mix times."""
    missing = [a for a in agents if a not in batch]
    if missing:
        raise AlignmentError(f"the train batch lacks agents {missing}; MADDPG updates all agents together")
    ids = [batch[a][TRANSITION_ID] for a in agents if TRANSITION_ID in batch[a]]
    if len(ids) != len(agents) or any(not torch.equal(ids[0], i) for i in ids[1:]):
        raise AlignmentError("the agents' rows of this train batch do not come from the same env steps")


def td_loss(error: torch.Tensor, huber_delta: float) -> torch.Tensor:
    """Mean squared TD error (eq. 6), or, for huber_delta > 0, Huber's (squared below delta, linear above)."""
    if huber_delta > 0.0:
        return torch.nn.functional.huber_loss(error, torch.zeros_like(error), delta=huber_delta)
    return torch.mean(error**2)


class MADDPGTorchLearner(TorchLearner, MADDPGLearner):
    """Centralised critics, decentralised actors; one update step covers all agents."""

    @override(TorchLearner)
    def build(self) -> None:
        # Torch defaults to a thread per core; on these small networks the threads mostly
        # wait for each other (3x slower measured on 2 shared cores), so use the CPUs
        # this learner was given.
        c = self.config
        torch.set_num_threads(
            max(1, int(c.num_cpus_per_learner if c.num_learners > 0 else c.num_cpus_for_main_process))
        )
        super().build()
        self._temp_losses: dict[tuple[ModuleID, str], TensorType] = {}
        self._critic_updates = 0  # counts update steps, for the delayed actor updates

    @override(Learner)
    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # The update count decides when the actors start and which steps move them:
        # a restored run must carry on from it, not warm up again.
        return {**super().get_state(*args, **kwargs), CRITIC_UPDATES_KEY: self._critic_updates}

    @override(Learner)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._critic_updates = int(state.get(CRITIC_UPDATES_KEY, self._critic_updates))

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        module = self._module[module_id]
        critic = self.get_parameters(module.qf)
        self.register_optimizer(
            module_id=module_id,
            optimizer_name=QF_OPTIMIZER,
            optimizer=torch.optim.Adam(critic),
            params=critic,
            lr_or_lr_schedule=config.critic_lr,
        )
        if module.twin_q:
            twin = self.get_parameters(module.qf_twin)
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=QF_TWIN_OPTIMIZER,
                optimizer=torch.optim.Adam(twin),
                params=twin,
                lr_or_lr_schedule=config.critic_lr,
            )
        actor = self.get_parameters(module.pi)
        self.register_optimizer(
            module_id=module_id,
            optimizer_name=POLICY_OPTIMIZER,
            optimizer=torch.optim.Adam(actor),
            params=actor,
            lr_or_lr_schedule=config.actor_lr,
        )

    @override(Learner)
    def compute_losses(self, *, fwd_out: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        agents = self.module[next(iter(self.module.keys()))].unwrapped().agents
        check_aligned(batch, agents)
        x, x_next = joint(batch, agents, Columns.OBS), joint(batch, agents, Columns.NEXT_OBS)
        a = [batch[j][Columns.ACTIONS] for j in agents]
        a_next = torch.cat([fwd_out[j][ACTIONS_NEXT_TARGET] for j in agents], dim=-1)  # a'_j = mu'_j(o'_j)
        self._critic_updates += 1
        losses = {}
        for i, agent in enumerate(agents):
            module = self.module[agent].unwrapped()
            config = self.config.get_config_for_module(agent)
            r_i = batch[agent][Columns.REWARDS]
            not_done = 1.0 - batch[agent][Columns.TERMINATEDS].float()
            # Eq. 6: the target y and the critic's squared error (Huber's with critic_huber_delta > 0).
            y = r_i + config.gamma * not_done * module.compute_q_target(x_next, a_next)
            q = module.compute_q(x, torch.cat(a, dim=-1))
            qf_loss = td_loss(q - y.detach(), config.critic_huber_delta)
            if module.twin_q:
                qf_twin_loss = td_loss(
                    module.compute_q_twin(x, torch.cat(a, dim=-1)) - y.detach(), config.critic_huber_delta
                )
                self._temp_losses[(agent, QF_TWIN_OPTIMIZER)] = qf_twin_loss
            # Eq. 5: ascend Q_i with agent i's action replaced by mu_i(o_i), the others from the buffer.
            mu_i = fwd_out[agent][ACTIONS_PI]
            a_pi = [mu_i if j == i else a[j] for j in range(len(agents))]
            policy_loss = -torch.mean(module.compute_q(x, torch.cat(a_pi, dim=-1)))
            # An L2 pull on the pre-activations keeps tanh out of saturation (the reference code's
            # p_reg, on the logits): without it the actors collapse to constant +-1 actions. It pulls
            # towards the action prior's pre-activations (zeros without a prior; see the module).
            policy_loss = policy_loss + config.actor_action_l2 * torch.mean(
                fwd_out[agent][ACTIONS_PI_PRE] ** 2
            )
            self._temp_losses[(agent, QF_OPTIMIZER)] = qf_loss
            if (
                self._critic_updates > config.actor_warmup_updates
                and self._critic_updates % config.policy_delay == 0
            ):
                self._temp_losses[(agent, POLICY_OPTIMIZER)] = policy_loss
            self.metrics.log_dict(
                {
                    QF_LOSS_KEY: qf_loss,
                    POLICY_LOSS_KEY: policy_loss,
                    QF_MEAN_KEY: q.mean(),
                    TD_ERROR_MEAN_KEY: (q - y).abs().mean(),
                    ACTION_ABS_MEAN_KEY: mu_i.abs().mean(),
                },
                key=agent,
                window=1,
            )
            losses[agent] = qf_loss + policy_loss
        return losses

    @override(Learner)
    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: Any, batch: dict[str, Any], fwd_out: dict[str, TensorType]
    ) -> TensorType:
        """Not used: an agent's MADDPG loss needs every agent's batch (see `compute_losses`)."""
        raise NotImplementedError(
            "MADDPG's losses are joint over all agents; Learner.compute_losses computes them"
        )

    @override(TorchLearner)
    def compute_gradients(self, loss_per_module: dict[ModuleID, TensorType], **kwargs: Any) -> ParamDict:
        # Each loss differentiates only its own optimizer's parameters: the actor's loss
        # flows through Q_i but must not move the critic.
        grads: ParamDict = {}
        for module_id in loss_per_module:
            for optim_name, optim in self.get_optimizers_for_module(module_id):
                params = self.filter_param_dict_for_optimizer(self._params, optim)
                loss = self._temp_losses.pop((module_id, optim_name), None)
                if loss is None:  # a delayed actor: no gradient, so its optimizer leaves it alone
                    for p in params.values():
                        p.grad = None
                    continue
                values = torch.autograd.grad(
                    loss, list(params.values()), retain_graph=True, allow_unused=True
                )
                for (pid, p), g in zip(params.items(), values, strict=True):
                    grads[pid] = torch.zeros_like(p) if g is None else g
        assert not self._temp_losses, f"losses without an optimizer: {list(self._temp_losses)}"
        return grads
