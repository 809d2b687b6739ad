"""The one LightningModule: REINFORCE with a pluggable baseline for any policy preset and problem."""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
from tensordict import TensorDict
from torch import Tensor
from torchrl.envs import EnvBase

from nco.checkpoints import checkpoint_info, read_checkpoint
from nco.envs import get_problem
from nco.policies import AttentionPolicy, DecodeConfig, PolicyConfig, build_policy
from nco.train.baselines import Baseline, make_baseline
from nco.train.data import _BatchIndices, _ValBatches, load_validation_set, make_generator
from nco.train.evaluation import decode_costs
from nco.train.scaling import RewardScaler
from nco.train_config import _STREAM_SAMPLING, TrainConfig, batch_seed

__all__ = ["REINFORCEModule"]


def _init_policy(policy: AttentionPolicy, pcfg: PolicyConfig, cfg: TrainConfig) -> None:
    """Copy the policy weights of ``cfg.init_from`` into ``policy`` (same problem and network)."""
    info, state, path = read_checkpoint(str(cfg.init_from))
    if info["problem"] != cfg.problem:
        raise ValueError(
            f"init-from {path}: trained on problem {info['problem']!r}, this run is {cfg.problem!r}"
        )
    theirs, ours = PolicyConfig.from_dict(info["policy"]).to_dict(), pcfg.to_dict()
    changed = {k for k in ours if theirs.get(k) != ours[k]}
    # A network without the distance bias grows into one with it: the bias coefficients start
    # at 0, so the run starts from exactly the function of the checkpoint.
    grows = (
        bool(changed)
        and changed <= {"name", "attn_dist_bias"}
        and not theirs.get("attn_dist_bias")
        and bool(ours.get("attn_dist_bias"))
    )
    diff = [f"{k}={theirs.get(k)!r} (run: {ours.get(k)!r})" for k in ours if k in changed]
    if changed - {"name"} and not grows:
        raise ValueError(
            f"init-from {path}: its policy differs from this run's in {', '.join(diff)}; "
            "use the same preset and policy options (or only add attn_dist_bias)"
        )
    if not grows:
        policy.load_state_dict(state)
        return
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("_alpha") for k in missing):
        raise ValueError(
            f"init-from {path}: weights do not match this network (missing {missing}, "
            f"unexpected {unexpected})"
        )
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if name in missing:
                p.zero_()


class REINFORCEModule(L.LightningModule):
    """REINFORCE with a pluggable baseline for any policy preset and problem.

    Parameters
    ----------
    config : the training configuration (resolved here).
    val_data : validation instances [V] (CPU), or ``{size: instances}`` for several validation
        sizes (what :func:`load_validation_set` returns); None generates them from ``config``.
    val_reference : reference costs [V] for ``val/gap`` (None: no gap; one set only).

    Logged metrics: ``train/loss``, ``train/reward`` (mean over rollouts), ``train/advantage``
    (mean |advantage|), ``train/epoch_reward``, ``val/cost``, ``val/gap`` (%), ``baseline/*``;
    with a size range ``train/size`` and ``train/batch_size`` (the step's drawn size and batch);
    with several validation sizes ``val/cost_n{size}`` (``val/cost`` is the mean over all
    validation instances); for MoE policies ``moe/load_e{i}``, ``moe/entropy``, ``moe/dropped_fraction``,
    ``moe/dense_fraction``, ``moe/aux_loss``, ``moe/z_loss``.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        val_data: TensorDict | None = None,
        val_reference: Tensor | None = None,
    ) -> None:
        super().__init__()
        cfg = config.resolved()
        self.config = cfg
        self.problem = get_problem(cfg.problem)
        pcfg = cfg.policy_config()
        # Initialisation is part of the run's definition: the same seed gives the same weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.policy = build_policy(pcfg, self.problem)
        if cfg.init_from:
            _init_policy(self.policy, pcfg, cfg)
        # a registered submodule (its state is in every checkpoint) that implements Baseline
        self.baseline: Baseline = cast("Baseline", make_baseline(cfg, self.policy, self.problem))
        assert cfg.reward_norm is not None, "resolved() sets it"
        self.reward_scaler = RewardScaler(cfg.reward_norm, cfg.reward_norm_decay)
        self.save_hyperparameters(
            checkpoint_info(pcfg, cfg), ignore=["config", "val_data", "val_reference"]
        )
        self._generators: dict[int, Any] = {}
        self._envs: dict[tuple[str, int], EnvBase] = {}
        self.val_data = val_data if val_data is not None else load_validation_set(cfg)
        # (size label or None for one unlabelled set, instances, decoding batch) per set
        self._val_sets: list[tuple[int | None, TensorDict, int]]
        if isinstance(self.val_data, TensorDict):
            self._val_sets = [(None, self.val_data, cfg.val_batch_size)]
        else:
            self._val_sets = [
                (int(n), td, cfg.val_batch_size_at(int(n)))
                for n, td in sorted(self.val_data.items())
            ]
            if not self._val_sets:
                raise ValueError("val_data: no validation sets")
        if val_reference is not None:
            if len(self._val_sets) != 1 or self._val_sets[0][0] is not None:
                raise ValueError("reference costs need one validation set (not one per size)")
            count = self._val_sets[0][1].batch_size[0]
            if len(val_reference) != count:
                raise ValueError(
                    f"{len(val_reference)} reference costs for {count} validation instances"
                )
        self.val_reference = val_reference
        self._train_batches: _BatchIndices | None = None
        self._val_sums: list[Tensor] = []
        self._epoch_reward = [0.0, 0]

    # ------------------------------------------------------------------ helpers
    def env(self, size: int | None = None) -> EnvBase:
        """The problem's environment for ``size`` (default: the largest training size) on the
        module's device (one per device and size, stateless)."""
        n = self.config.max_size if size is None else int(size)
        key = (str(self.device), n)
        if key not in self._envs:
            self._envs[key] = self.problem.make_env(num_loc=n, device=self.device)
        return self._envs[key]

    def generator(self, size: int | None = None) -> Any:
        """The training instance generator for ``size`` (default: the largest training size)."""
        n = self.config.max_size if size is None else int(size)
        if n not in self._generators:
            self._generators[n] = make_generator(self.config, n)
        return self._generators[n]

    def _world(self) -> tuple[int, int]:
        if self._trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_decode_config(self, seed: int, td: TensorDict | None = None) -> DecodeConfig:
        """The training decoding configuration (sampling stream ``seed``, which also draws the
        random POMO starts of ``train_starts``; ``td`` = the batch, needed with
        ``train_starts`` to cap it at the problem's number of start candidates)."""
        c = self.config
        num_starts, start_choice = c.num_starts, "first"
        if c.train_starts is not None:
            if td is None:
                raise ValueError("train_decode_config: train_starts needs the batch")
            num_starts = min(c.train_starts, int(self.problem.num_starts(td)))
            start_choice = "random"
        assert c.decoding is not None, "resolved() sets it"
        return DecodeConfig(
            strategy=c.decoding,
            num_starts=num_starts,
            num_samples=c.num_samples,
            augment=c.augment,
            select_best=False,
            return_actions=False,
            seed=seed,
            start_choice=start_choice,
        )

    # ------------------------------------------------------------------ data
    def train_dataloader(self) -> _BatchIndices:
        _, world = self._world()
        self._train_batches = _BatchIndices(self.config.steps_per_epoch(world))
        return self._train_batches

    def val_dataloader(self) -> _ValBatches:
        rank, world = self._world()
        sets = [(td.batch_size[0], batch) for _, td, batch in self._val_sets]
        return _ValBatches(sets, rank, world)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        c = self.config
        rank, _ = self._world()
        seed = batch_seed(c.seed, self.current_epoch, rank, batch_idx)
        # Anything inside the policy that draws from torch's global RNG (MoE noise) is tied to the
        # batch too, so a resumed run repeats it exactly.
        torch.manual_seed(seed)
        # A size range: this batch's size (same on every rank) and the batch scaled to it.
        n = c.train_size(self.current_epoch, batch_idx)
        bs = c.batch_size_at(n)
        td = self.generator(n)(bs, seed=seed, device=self.device)
        env = self.env(n)
        out = self.policy(
            td,
            env,
            self.train_decode_config(
                batch_seed(c.seed, self.current_epoch, rank, batch_idx, _STREAM_SAMPLING), td
            ),
        )
        reward = out.reward.float()
        advantage = self.reward_scaler(
            reward - self.baseline.value(td, reward, env), td.get("variant", None)
        )
        loss = -(advantage.detach() * out.log_likelihood).mean()
        logs = {
            "train/reward": reward.mean().detach(),
            "train/advantage": advantage.abs().mean().detach(),
        }
        moe = out.moe_stats
        if moe is not None:
            aux = moe.aux_loss + moe.z_loss
            if c.aux_loss_weight > 0:
                loss = loss + c.aux_loss_weight * aux
            logs.update({f"moe/load_e{i}": v for i, v in enumerate(moe.load.detach())})
            logs.update(
                {
                    "moe/entropy": moe.entropy.detach(),
                    "moe/dropped_fraction": moe.dropped_fraction.detach(),
                    "moe/dense_fraction": moe.dense_fraction.detach(),
                    "moe/aux_loss": moe.aux_loss.detach(),
                    "moe/z_loss": moe.z_loss.detach(),
                }
            )
        logs["train/loss"] = loss.detach()
        if c.multi_size:
            logs["train/size"] = torch.tensor(float(n))
            logs["train/batch_size"] = torch.tensor(float(bs))
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=bs)
        self.log(
            "loss",
            loss.detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            logger=False,
            batch_size=bs,
        )
        self.log(
            "reward",
            logs["train/reward"],
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            logger=False,
            batch_size=bs,
        )
        self._epoch_reward[0] += float(logs["train/reward"])
        self._epoch_reward[1] += 1
        if self._train_batches is not None:
            self._train_batches.consumed = batch_idx + 1
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_reward = [0.0, 0]

    def on_train_epoch_end(self) -> None:
        s, n = self._epoch_reward
        if n:
            self.log("train/epoch_reward", s / n, sync_dist=True)
        for k, v in self.baseline.epoch_end(self.policy, self.env(), self.current_epoch).items():
            self.log(k, float(v), sync_dist=True)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_sums = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        k, start, end = (int(x) for x in batch)
        size, data, val_batch = self._val_sets[k]
        td = data[start:end]
        cost = decode_costs(
            self.policy,
            td,
            self.env(size),
            strategy=self.policy.config.decoding,
            batch_size=val_batch,
        )
        width = 3 if self.val_reference is not None else 2
        row = torch.zeros(len(self._val_sets), width, dtype=torch.float64, device=self.device)
        row[k, 0] = cost.double().sum().to(self.device)
        row[k, 1] = float(end - start)
        if self.val_reference is not None:
            ref = self.val_reference[start:end].to(cost.device)
            row[k, 2] = (100.0 * (cost.double() / ref - 1.0)).sum().to(self.device)
        self._val_sums.append(row)

    def on_validation_epoch_end(self) -> None:
        width = 3 if self.val_reference is not None else 2
        local = (
            torch.stack(self._val_sums).sum(0)
            if self._val_sums
            else torch.zeros(len(self._val_sets), width, dtype=torch.float64, device=self.device)
        )
        # Exact means over the whole sets (ranks may hold slices of different sizes).
        total = (
            self.trainer.strategy.reduce(local.float(), reduce_op="sum")
            if self.trainer.world_size > 1
            else local
        )
        count = float(total[:, 1].sum())
        if count == 0:
            return
        self.log("val/cost", float(total[:, 0].sum()) / count, prog_bar=True, sync_dist=True)
        if self.val_reference is not None:
            self.log("val/gap", float(total[0, 2]) / count, prog_bar=False, sync_dist=True)
        for (size, _, _), per in zip(self._val_sets, total):
            if size is not None and float(per[1]) > 0:
                self.log(f"val/cost_n{size}", float(per[0]) / float(per[1]), sync_dist=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        c = self.config
        opt = torch.optim.Adam(self.policy.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        if c.lr_schedule == "none":
            return opt
        if c.lr_schedule == "multistep":
            milestones = sorted({max(1, round(m * c.epochs)) for m in c.lr_milestones})
            sched: Any = torch.optim.lr_scheduler.MultiStepLR(
                opt, milestones=milestones, gamma=c.lr_gamma
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
