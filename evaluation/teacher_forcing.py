"""Teacher-forced log-probabilities of many continuations of many prefixes, computed once per token.

TOFU scores seven answers per question (the answer, a paraphrase, five perturbations) and they
share the prompt and often their first words. Scoring each (prompt + answer) sequence separately
computes the prompt seven times. Here every item becomes a *token tree*: the prompt is a chain and
the continuations form a trie hanging from its last token, so each distinct (context, token) is
computed once. The tree goes through the model as one row with

  - position ids = depth in the tree (what the token's position would be in its own sequence), and
  - a 4D attention mask letting each node attend to exactly its ancestors and itself,

which makes every node's output identical to the plain causal forward of its own sequence.
The prefix common to *all* items (the chat template's system prompt) is computed once per batch
and shared through the KV cache.

Measured on TOFU's forget10 (SmolLM2 tokenizer): 7 answers = 280 tokens per question, 219 distinct
trie nodes; with the shared prompt that is ~245 tokens per question instead of ~609.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch


@dataclass
class Scored:
    """One continuation: the log-probability of each of its tokens and whether greedy decoding
    (argmax) would have produced it, both under teacher forcing; the mean and standard deviation of
    log p(v) over v ~ p at each token's position (the next-token distribution's, for Min-K%++)."""

    logprobs: list[float]
    greedy: list[bool]
    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.logprobs)

    @property
    def sum_logprob(self) -> float:
        return float(sum(self.logprobs))

    @property
    def avg_loss(self) -> float:
        """Mean negative log-likelihood per token (TOFU's `avg_gt_loss` etc.); NaN when empty."""
        return -self.sum_logprob / self.n_tokens if self.logprobs else float("nan")


@dataclass
class _Tree:
    tokens: list[int]        # node tokens, parents before children
    parents: list[int]       # index of the parent node, -1 for the first node (hangs off the shared prefix)
    depths: list[int]        # position of the node within its own sequence, after the shared prefix
    targets: list[list[int]]  # per continuation: the node index of each of its tokens


def _build_tree(prefix: Sequence[int], continuations: Sequence[Sequence[int]], shared: int) -> _Tree:
    tokens, parents, depths = [], [], []
    last = -1
    for d, tok in enumerate(prefix[shared:]):
        tokens.append(int(tok))
        parents.append(last)
        depths.append(d)
        last = len(tokens) - 1
    root_depth = len(prefix) - shared
    children: dict[tuple[int, int], int] = {}
    targets = []
    for cont in continuations:
        node, path = last, []
        for d, tok in enumerate(cont):
            key = (node, int(tok))
            if key not in children:
                tokens.append(int(tok))
                parents.append(node)
                depths.append(root_depth + d)
                children[key] = len(tokens) - 1
            node = children[key]
            path.append(node)
        targets.append(path)
    return _Tree(tokens, parents, depths, targets)


def _common_prefix_length(prefixes: Sequence[Sequence[int]]) -> int:
    """Length shared by every prefix, leaving at least one token in each (the node whose output
    predicts the first continuation token must be part of the tree)."""
    n = min(len(p) for p in prefixes) - 1
    first = prefixes[0]
    for p in prefixes[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def _ancestor_mask(tree: _Tree, width: int) -> torch.Tensor:
    """[width, width] bool: node i may attend to node j iff j is i or an ancestor of i."""
    mask = torch.zeros(width, width, dtype=torch.bool)
    for i, parent in enumerate(tree.parents):
        if parent >= 0:
            mask[i] = mask[parent]
        mask[i, i] = True
    for i in range(len(tree.parents), width):  # padding rows see only themselves (no NaN rows)
        mask[i, i] = True
    return mask


def _batches(sizes: list[int], token_budget: int) -> list[list[int]]:
    """Group items (sorted by size) so that rows x widest row stays within the budget."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * sizes[i] > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _lm_parts(model):
    """(decoder body, output head) of a causal LM, so logits are computed only where needed."""
    head = model.get_output_embeddings()
    body = model.get_decoder() if hasattr(model, "get_decoder") else None
    if head is None or body is None or body is model:
        raise TypeError(f"{type(model).__name__}: cannot split into a decoder and an output head")
    return body, head


# (logits [N, V], owning item per row [N], the continuation tokens before each row's target) -> logits
LogitsTransform = Callable[[torch.Tensor, torch.Tensor, list], torch.Tensor]


def _batch_inputs(trees: Sequence[_Tree], batch: list[int], shared: int, dtype, device):
    """(input ids, depth positions, additive tree attention mask) of the trees in `batch`, padded to the
    widest; every row sees the shared prefix and its own ancestors."""
    width = max(len(trees[i].tokens) for i in batch)
    rows = len(batch)
    input_ids = torch.zeros(rows, width, dtype=torch.long)
    positions = torch.zeros(rows, width, dtype=torch.long)
    allowed = torch.zeros(rows, 1, width, shared + width, dtype=torch.bool)
    allowed[:, :, :, :shared] = True
    for r, i in enumerate(batch):
        t = trees[i]
        n = len(t.tokens)
        input_ids[r, :n] = torch.tensor(t.tokens)
        positions[r, :n] = torch.tensor(t.depths) + shared
        positions[r, n:] = shared
        allowed[r, 0, :, shared:] = _ancestor_mask(t, width)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return input_ids.to(device), positions.to(device), mask.to(device)


def _hidden(model, body, shared_ids: torch.Tensor, input_ids, positions, mask) -> torch.Tensor:
    """The decoder's last hidden states of a batch of trees, the shared prefix run once into a KV cache."""
    cache = None
    if shared_ids.shape[1]:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        body(input_ids=shared_ids, past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(input_ids.shape[0])
    return body(input_ids=input_ids, position_ids=positions, attention_mask=mask,
                past_key_values=cache, use_cache=cache is not None).last_hidden_state


def _moments(logits: torch.Tensor, lse: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the mean and standard deviation of log p(v) under p = softmax(row), in chunks of rows (no
    full [N, V] copy at once)."""
    means, stds = [], []
    for start in range(0, logits.shape[0], chunk):
        # a -inf logit (probability 0) adds nothing; clamped so that 0 * log 0 is 0, not NaN
        logp = (logits[start:start + chunk] - lse[start:start + chunk, None]).clamp_min(-1e4)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        second = (p * logp.square()).sum(-1)
        means.append(mu)
        stds.append((second - mu.square()).clamp_min(0.0).sqrt())
    return torch.cat(means), torch.cat(stds)


def _scored_tokens(trees: Sequence[_Tree], batch: list[int], hidden: torch.Tensor, head,
                   transform_logits: Optional[LogitsTransform]) -> tuple[list, ...]:
    """(log-probability, is-greedy, next-token mean and std of log p) of every continuation token of the
    batch, in tree, path, token order.
    Every scored token is predicted by its parent node's output; a parent shared by several continuations
    (a common answer prefix) goes through the output head once."""
    device = hidden.device
    sources: dict[tuple[int, int], int] = {}
    src_of, tgt_tok, owner, contexts = [], [], [], []
    for r, i in enumerate(batch):
        t = trees[i]
        for path in t.targets:
            for j, node in enumerate(path):
                src_of.append(sources.setdefault((r, t.parents[node]), len(sources)))
                tgt_tok.append(t.tokens[node])
                owner.append(i)
                if transform_logits is not None:
                    contexts.append([t.tokens[n] for n in path[:j]])
    if not sources:
        return [], [], [], []
    rows_idx = torch.tensor([r for r, _ in sources], device=device)
    src_idx = torch.tensor([n for _, n in sources], device=device)
    logits = head(hidden[rows_idx, src_idx]).float()
    src = torch.tensor(src_of, device=device)
    if transform_logits is not None:  # per scored token: the guard may depend on the item
        logits = transform_logits(logits[src], torch.tensor(owner, device=device), contexts)
        src = torch.arange(len(src_of), device=device)
    lse = torch.logsumexp(logits, dim=-1)  # log-softmax at the targets only, no [N, V] copy
    tgt = torch.tensor(tgt_tok, device=device)
    mu, sd = _moments(logits, lse)
    return ((logits[src, tgt] - lse[src]).tolist(), (logits.argmax(dim=-1)[src] == tgt).tolist(),
            mu[src].tolist(), sd[src].tolist())


@torch.inference_mode()
def score_continuations(
    model,
    prefixes: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    token_budget: int = 3072,
    transform_logits: Optional[LogitsTransform] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> list[list[Scored]]:
    """For each item i and each continuation c of it: log p(c_t | prefix_i, c_<t) for every t.

    `prefixes[i]` must be non-empty (its last token predicts the first continuation token).
    `transform_logits(logits [N, V], item_index [N], contexts)` may rewrite logits before the
    softmax; `contexts[n]` are the continuation tokens already "decoded" before row n's target (a
    runtime guard's mask and penalty depend on them, so a guarded system is scored as it decodes).
    `progress(n)` is called with the number of items finished after each batch."""
    if len(prefixes) != len(continuations):
        raise ValueError("prefixes and continuations differ in length")
    if not prefixes:
        return []
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("every prefix needs at least one token")
    body, head = _lm_parts(model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    shared = _common_prefix_length(prefixes)
    shared_ids = torch.tensor([list(prefixes[0][:shared])], device=device)
    trees = [_build_tree(p, c, shared) for p, c in zip(prefixes, continuations)]
    results: list[list[Scored]] = [[] for _ in trees]
    for batch in _batches([len(t.tokens) for t in trees], token_budget):
        hidden = _hidden(model, body, shared_ids, *_batch_inputs(trees, batch, shared, dtype, device))
        token_logp, greedy, mu, sd = _scored_tokens(trees, batch, hidden, head, transform_logits)
        k = 0
        for i in batch:
            for path in trees[i].targets:
                n = len(path)
                results[i].append(Scored(token_logp[k:k + n], greedy[k:k + n], mu[k:k + n], sd[k:k + n]))
                k += n
        if progress is not None:
            progress(len(batch))
    return results
