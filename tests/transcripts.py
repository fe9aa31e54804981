"""Comparing what was said with what was heard: word error rate over normalised words (for the audio and realtime tests)."""
import re

def words(s:str) -> list[str]: return re.sub(r"[^a-z0-9' ]", ' ', s.lower()).split()

def wer(ref:str, hyp:str) -> float:
    "Word error rate: word-level edit distance over the reference length."
    r, h = words(ref), words(hyp)
    d = list(range(len(h)+1))
    for i in range(1, len(r)+1):
        prev, d[0] = d[0], i
        for j in range(1, len(h)+1):
            prev, d[j] = d[j], min(d[j]+1, d[j-1]+1, prev+(r[i-1] != h[j-1]))
    return d[len(h)]/max(len(r), 1)
