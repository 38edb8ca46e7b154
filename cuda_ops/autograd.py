"""The autograd bridge for fused losses whose forward pass also produces the gradient.

A fused kernel returns ``(loss, grad)`` where ``grad = d loss / d logits`` is already
complete; backward only scales it by the incoming gradient, in place, and hands the very
buffer to autograd. Peak extra memory is therefore one gradient buffer.

The buffer is consumed by the first backward: a second backward through the same graph
(``retain_graph=True``) raises instead of returning a wrongly scaled gradient.
"""
import torch


class FusedLossFunction(torch.autograd.Function):
    """``apply(logits, run)``: ``run(logits_detached) -> (loss 0-dim, grad like logits)``."""

    @staticmethod
    def forward(ctx, logits, run):
        loss, grad = run(logits.detach())
        # Kept as an attribute, not save_for_backward: backward drops the only reference, so
        # autograd can adopt the buffer as ``logits.grad`` without copying it.
        ctx.grad = grad
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError(
                "cuda_ops fused loss: backward ran twice through the same graph; the fused "
                "gradient buffer is consumed by the first backward (do not use retain_graph)"
            )
        ctx.grad = None
        if not _is_one(grad_output):
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None


def _is_one(grad_output):
    """True when the incoming gradient is exactly 1 (checked only where that costs no sync)."""
    return grad_output.device.type == "cpu" and grad_output.item() == 1.0
