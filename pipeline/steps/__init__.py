"""Steps: one plain function per pipeline step (Kedro's nodes). Entry points (cli, dags/, plugins/) call them.

A step reads its settings from configs/ (pipeline.config), takes and returns paths and small JSON-able values, and
calls the domain modules below it. ``bookkeeping``: run ids and `runs` rows; ``ingest`` and ``tokens``: ingest, tokenizer
training and tokenizing (the CLI and the DAG tasks); ``retrieval``: the audio_retrieval DAG; ``nightly``: the nightly_reindex DAG.
"""
