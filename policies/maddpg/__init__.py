"""MADDPG (Lowe et al., NeurIPS 2017) on RLlib's new API stack: config, module, learner, algorithm."""

from policies.maddpg.algorithm import MADDPG
from policies.maddpg.config import MADDPGConfig
from policies.maddpg.replay import JointReplayBuffer
from policies.maddpg.rl_module import MADDPGRLModule
from policies.maddpg.torch_learner import MADDPGTorchLearner
from policies.maddpg.torch_rl_module import MADDPGTorchRLModule

__all__ = [
    "MADDPG",
    "JointReplayBuffer",
    "MADDPGConfig",
    "MADDPGRLModule",
    "MADDPGTorchLearner",
    "MADDPGTorchRLModule",
]
