"""Online EWC (Kirkpatrick et al. 2017; online form of Schwarz et al. 2018): a quadratic penalty
pulling each weight towards its value after the last experience, weighted by a diagonal Fisher.

Online, not one Fisher per experience: one running Fisher ``F <- gamma * F + F_e`` and one anchor
(the weights after the latest experience), so memory and step cost stay constant over the stream.
``F_e`` is the empirical Fisher: the mean over the experience's images of squared per-sample
gradients of the log-likelihood of the true label, in eval mode (``torch.func`` per-sample grads).
Our own loop: Avalanche's ``EWC`` plugin adds the template's per-batch overhead and hides its
penalty in hooks (FIELD_GUIDE section 5); here the penalty is an explicit term in ``observe``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from continual.learner.base import LEARNERS
from continual.learner.common import ClassifierLearner, check_non_negative
from continual.memory import ClassBalancedReservoir


@LEARNERS.register("ewc")
class EWCLearner(ClassifierLearner):
    """``CE(current) + ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2``. No memory; class-only.

    In a multi-process run each process estimates F on its share of the experience; the penalty is
    linear in F and DDP averages gradients, so training follows the mean of the processes' estimates.
    """

    supports_ddp = True
    online_blocker = ("its penalty anchors the weights and Fisher information taken at each experience's end "
                      "(EWC++ estimates them online; not built here)")

    def __init__(self, *, n_classes: int, image_shape: tuple[int, ...],
                 memory: ClassBalancedReservoir | None = None, class_attributes: torch.Tensor | None = None,
                 attribute_blocks: tuple[int, ...] | None = None, ewc_lambda: float = 1e5, gamma: float = 1.0,
                 fisher_batch_size: int = 64,
                 backbone: str = "small_cnn", backbone_args: dict | None = None, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, amp: bool = True, channels_last: bool = False) -> None:
        check_non_negative(ewc_lambda=ewc_lambda)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"learner.gamma must be in [0, 1], got {gamma}")
        if fisher_batch_size < 1:
            raise ValueError(f"learner.fisher_batch_size must be >= 1, got {fisher_batch_size}")
        super().__init__(n_classes=n_classes, image_shape=image_shape, backbone=backbone,
                         backbone_args=backbone_args, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         amp=amp, channels_last=channels_last)
        self.ewc_lambda, self.gamma, self.fisher_batch_size = ewc_lambda, gamma, fisher_batch_size
        # Parameter name -> tensor; empty until the first experience ends (then no penalty is added).
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self) -> torch.Tensor:
        """``0.5 * sum_i F_i (theta_i - theta*_i)^2`` over every parameter (a scalar on the device)."""
        terms = [(self.fisher[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in self.named_parameters()]
        return 0.5 * torch.stack(terms).sum()

    def observe(self, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        self.train()
        self.last_batch_size = len(y)
        loss = F.cross_entropy(self.train_forward(self.logits, x), y)
        if self.fisher and self.ewc_lambda > 0:  # a dict check on the host, not a tensor value
            loss = loss + self.ewc_lambda * self.penalty()
        return self.step(loss)

    def empirical_fisher(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean over ``(x, y)`` of the squared per-sample gradient of ``log p(y | x)``, per parameter."""
        self.eval()  # batch norm on running statistics: each sample's gradient is its own
        params = {n: p.detach() for n, p in self.named_parameters()}
        buffers = {n: b.detach() for n, b in self.named_buffers()}

        def nll(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            logits = functional_call(self, (p, buffers), (xi[None],))  # (1, n_seen)
            return F.cross_entropy(logits, yi[None])

        per_sample = vmap(grad(nll), in_dims=(None, 0, 0))
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        for s in range(0, len(y), self.fisher_batch_size):
            grads = per_sample(params, x[s:s + self.fisher_batch_size], y[s:s + self.fisher_batch_size])
            for n, g in grads.items():  # g: (b, *param shape)
                fisher[n] += g.pow(2).sum(0)
        return {n: f / max(len(y), 1) for n, f in fisher.items()}

    def end_experience(self, experience: int, x: torch.Tensor, y: torch.Tensor,
                       codes: torch.Tensor | None) -> None:
        new = self.empirical_fisher(x, y)
        self.fisher = {n: self.gamma * self.fisher[n] + f if n in self.fisher else f for n, f in new.items()}
        self.anchor = {n: p.detach().clone() for n, p in self.named_parameters()}

    def checkpoint_state(self) -> dict:
        return {**super().checkpoint_state(), "fisher": dict(self.fisher), "anchor": dict(self.anchor)}

    def load_checkpoint_state(self, state: dict) -> None:
        super().load_checkpoint_state(state)
        device = next(self.parameters()).device  # checkpoints are read onto the CPU
        self.fisher = {n: t.to(device) for n, t in state.get("fisher", {}).items()}
        self.anchor = {n: t.to(device) for n, t in state.get("anchor", {}).items()}
