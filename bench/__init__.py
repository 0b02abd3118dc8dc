"""Micro-benchmarks and load generators. Each is a module run from the repository root, e.g.
``python -m bench.service``; the measuring ones rewrite their section of docs/benchmarks.md
(bench.benchmarks_doc). The reproduction study is a product feature: drtrain_study.
"""
