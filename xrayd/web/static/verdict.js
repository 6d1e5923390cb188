// Study page verdict panel: keyboard verdicts. No inline scripts (Content-Security-Policy).
