"""The datasets and batches a run trains and validates on (mlx-lm's batcher, seeded).

The train set is the whole (curated) train split; validation uses a fixed, seeded subset of the
curated valid split with its own batch size, so every run and trial is compared on the same examples.
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

from mlx_lm.tuner.trainer import iterate_batches as mlx_iterate_batches

from medlora.config import RunConfig
from medlora.data import splits
from medlora.data.tokenize import cached_encode
from medlora.errors import UserError
from medlora.stopping import check as check_stop


def shuffled_valid(cfg: RunConfig, split_dir: Path) -> list[dict]:
    """The valid split in the seeded order every run takes its first ``train.val_examples`` from, curated like the
    training split (``data.drop_train_answers``): validation loss then measures what training teaches, not how
    much of MedQuAD's boilerplate a run has learnt. The valid.jsonl file itself keeps every row."""
    rows = splits.curate_records(splits.load_split(split_dir, "valid"), tuple(cfg.data.drop_train_answers))
    random.Random(cfg.data.seed).shuffle(rows)
    return rows


def load_datasets(cfg: RunConfig, split_dir: Path, tokenizer, model_key: str):
    """Train set (the whole train split) and the fixed validation subset, tokenized once and cached."""
    valid_rows = shuffled_valid(cfg, split_dir)
    encode = partial(cached_encode, tokenizer=tokenizer, cache_dir=split_dir / "tokenized",
                     mask_prompt=cfg.train.mask_prompt, max_seq_length=cfg.train.max_seq_length,
                     truncation=cfg.train.truncation)
    train_set = encode(splits.load_split(split_dir, "train"), cache_key=f"train|{model_key}")
    valid_set = encode(valid_rows[: cfg.train.val_examples], cache_key=f"valid|{model_key}|{cfg.data.seed}|curated:{list(cfg.data.drop_train_answers)}")
    if len(train_set) < cfg.train.batch_size:
        raise UserError(
            f"train split has {len(train_set)} usable examples, fewer than train.batch_size={cfg.train.batch_size} "
            "(fix: lower train.batch_size or use a bigger data.csv)"
        )
    return train_set, valid_set


def batch_iterator(train_seed: int, eval_batch_size: int, extend_train=None, extend_eval=None,
                   skip_first_eval: bool = False):
    """mlx-lm's ``iterate_batches``, seeded; evaluation (``loop=False``) always uses the same batches.

    Validation runs with its own batch size so that its loss is over the same
    examples whatever the training batch size is. ``extend_*`` add what the loss needs
    beyond ``(batch, lengths)`` (see :func:`medlora.loss.training_loss`). ``skip_first_eval``: the first
    evaluation (mlx-lm's, of the untrained model) sees one example only; its loss is not used.
    """
    evaluations = 0

    def iterate(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        nonlocal evaluations
        if not loop:
            evaluations += 1
            if skip_first_eval and evaluations == 1:
                dataset = [dataset[0]]
            batch_size = min(eval_batch_size, len(dataset))
        extend = (extend_train if loop else extend_eval) or (lambda batches: batches)
        return _stoppable(extend(mlx_iterate_batches(
            dataset, batch_size, max_seq_length, loop=loop, seed=train_seed if loop else 0, comm_group=comm_group
        )))

    return iterate


def _stoppable(batches):
    """Each batch first checks for a Ctrl-C / SIGTERM that a library may have swallowed."""
    for batch in batches:
        check_stop()
        yield batch
