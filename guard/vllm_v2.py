"""Model Runner V2 logits-processor adapter (vLLM's GPU default).

MRv2 keys state by persistent request slot and hands `apply` a `LogitsContext` mapping logits rows
to slots. `add_request` only sees the sampling params, so classification waits for
`apply_staged_writes`, when the runner has written the request's tokens into `req_states`
(`all_token_ids[slot, :prompt_len]`); all requests admitted in a step are classified together.
Committed output tokens are read back from `all_token_ids` up to `total_len` for guarded slots
only, in one read from the device per step (each read waits for the GPU); under speculative decoding
a row's draft tokens (the `input_ids` of the request's earlier rows in this step) extend its context.
"""

from __future__ import annotations


from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor

from .decode import RowMasks, guard_rows, to_device
from .runtime import validate_sampling_params


class GuardProcessorV2(LogitsProcessor):
    def __init__(self, vllm_config, req_states, runtime=None):
        from .runtime import engine_runtime

        self.state = req_states
        self.runtime, self.watch = engine_runtime(vllm_config, runtime)   # the policy watched: guard/reload.py
        self.guards: dict = {}           # slot -> RequestGuard (flagged requests only)
        self.pending: dict = {}          # slot -> sampling params, admitted but not classified yet
        self.masks = RowMasks()

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        validate_sampling_params(sampling_params.extra_args)

    def add_request(self, req_idx: int, sampling_params) -> bool:
        self.guards.pop(req_idx, None)                      # a reused slot starts clean
        if self.runtime is None:
            return False
        self.pending[req_idx] = sampling_params
        return True

    def apply_staged_writes(self) -> None:
        if not self.pending:
            return
        if self.watch is not None:   # a replaced policy classifies the requests admitted from now on
            self.runtime = self.watch.get()
        slots = list(self.pending)
        requests, outputs = [], []
        for slot in slots:
            prompt_len = int(self.state.prompt_len.np[slot])
            prefill_len = int(self.state.prefill_len.np[slot])
            tokens = self.state.all_token_ids.gpu[slot, :prefill_len].tolist()
            params = self.pending[slot]
            requests.append((tokens[:prompt_len], params.extra_args, params.temperature))
            outputs.append(tokens[prompt_len:])          # resumed after preemption: output so far
        self.pending.clear()
        for slot, guard, output in zip(slots, self.runtime.guards(requests), outputs):
            if guard is not None:
                guard.feed(output)
                self.guards[slot] = guard

    def _catch_up(self, slots: list[int]) -> None:
        """Feed each guarded slot the committed tokens it has not read. One read from the device gives every
        slot's length and next token (a decode step commits one); a slot with more new tokens (a resumed
        request, accepted draft tokens) reads the rest on its own. Per slot, each read would wait for the GPU."""
        import torch

        state, device = self.state, self.state.total_len.gpu.device
        starts = [int(state.prompt_len.np[s]) + self.guards[s].consumed for s in slots]
        where = to_device(torch.tensor([slots, starts]), device)
        last = state.all_token_ids.gpu.shape[1] - 1
        next_tokens = state.all_token_ids.gpu[where[0], where[1].clamp(max=last)]
        totals, firsts = torch.stack([state.total_len.gpu[where[0]].long(), next_tokens.long()]).tolist()
        for slot, start, total, first in zip(slots, starts, totals, firsts):
            if total > start:
                rest = state.all_token_ids.gpu[slot, start + 1:total].tolist() if total > start + 1 else []
                self.guards[slot].feed([first, *rest])

    def apply(self, logits, ctx):
        if not self.guards or not any(int(s) in self.guards for s in ctx.idx_mapping_np):
            return logits
        row_slots, local, input_ids = _layout(logits, ctx)
        self._catch_up(sorted({s for s in row_slots if s in self.guards}))
        drafts: dict = {}
        rows = []
        for row, slot in enumerate(row_slots):
            guard = self.guards.get(slot)
            if guard is None:
                continue
            extra = drafts.setdefault(slot, []) if local[row] else []
            if local[row]:
                extra.append(input_ids[row])
            rows.append((row, guard, list(extra)))
        guard_rows(logits, rows, self.masks)
        return logits


def _layout(logits, ctx) -> tuple[list[int], list[int], list[int]]:
    """(each row's slot, its offset among its request's rows, its input token). With one row per request
    (no draft tokens this step) the rows are the batch's requests in order, known on the host; otherwise the
    three are read from the device together."""
    import torch

    if logits.shape[0] == len(ctx.idx_mapping_np):
        return [int(s) for s in ctx.idx_mapping_np], [0] * logits.shape[0], []
    slots, local, input_ids = torch.stack(
        [ctx.expanded_idx_mapping.long(), ctx.expanded_local_pos.long(), ctx.input_ids.long()]).tolist()
    return slots, local, input_ids
