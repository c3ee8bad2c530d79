"""The Parquet lake's layout and its nightly upkeep (docs/orchestration.md, "The lake").

`catalog` says which files hold a day's trades (committed bronze batches, curated manifests) without
listing data files; `compaction` rewrites a day's bronze into the curated area and expires old bronze.
"""
