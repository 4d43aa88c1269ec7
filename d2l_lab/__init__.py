"""The research room: the synthetic world, the trainers and the long-task demo.

Everything here serves to make and measure the embedded default (its base model and its two
hypernetworks) and to show the library at work. The library itself (``d2l_memory``,
``t2l_skills``, ``integrations``) never imports this package; it is installed beside them so
that ``d2l-memory demo`` and ``python -m d2l_lab.<trainer>`` run from a plain install.
"""
