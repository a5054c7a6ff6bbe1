"""Batch scoring: a folder or manifest in, one Parquet row per image out.

One pipeline (:mod:`core.batch.job`) over two engines that run the same
per-row code (:class:`core.batch.scorer.BatchScorer`): ``local`` (one
process, no Ray at run time) and ``ray`` (Ray Data ``map_batches`` with the
scorer as a callable class, one model per actor). Rows are built by
:mod:`core.batch.rows`, written by :mod:`core.batch.parquet`, and with
``--db`` ingested into the review store by :mod:`core.batch.ingest`.
"""
