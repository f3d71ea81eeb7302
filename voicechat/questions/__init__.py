"""Where questions come from, above the session that answers them: typed lines (the REPL),
spoken ones (push-to-talk, hands-free) and a question said over the reply (barge-in).
"""
