"""Backends: one module per wire protocol behind one small interface.

A backend turns a message list into a `Reply`: iterate it for text deltas as they arrive;
afterwards `reply.outcome` says how it ended. Errors are raised as `voicechat.errors`
types, translated where the wire is read.
"""
