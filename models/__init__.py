"""Risk models: validated scores, the trained hazard models, scoring and the fairness audit.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, unless set already): scikit-learn's
gradient boosting (fit and predict) runs hundreds of short OpenMP regions per tree, and with
OpenMP's default spinning a thread whose partner was descheduled by another process burns its
core waiting at every barrier. On the shared 2-core machine (load 3-4) the 100,000-patient
training's three boosting fits took 9.9 s, 4.5 s and 1.8 s spinning against 0.8-1.0 s each
passive; the threads, their work and so the models are the same bit for bit (issue 21,
docs/benchmarks.md). It must be set before OpenMP is loaded (scikit-learn's first import):
cli/main.py sets it too, first thing.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
