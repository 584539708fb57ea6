"""The core: what every other package builds on and that imports nothing of ours. One Registry
and its discovery rule, the error types users see, where things live on disk, one-line config
checks, lazy imports of torch and friends, credential redaction, and Ctrl-C / SIGTERM handling.
"""
