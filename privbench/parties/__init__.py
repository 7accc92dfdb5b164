"""The parties of a cell, each in a process of its own: the trust boundary of privbench.

Plugins are untrusted code. The harness process holds the scenario, the ground truth, the run
secret and the scores, and runs none of a cell's defense or attack code itself. Every piece of
plugin code runs in a party process forked from a clean zygote, given plain tensors, and never
reused. What lives where:

- ``messages``: everything that crosses, one request type per party (what the defender fitting,
  encoding and evaluating, the service and the attacker each receive), and the two encodings
  (``pickle`` from the harness, ``torch.load(weights_only=True)`` of what a party sends back);
- ``roles``: what each party does with its request (the only place plugin code runs in a cell);
- ``channel``: a party's one way out, calls to the harness (queries, known pairs, the examiner, the
  target model) and progress lines;
- ``child``: a party process from the zygote's fork to its exit; ``sandbox``: what it can reach
  (its own empty directory, a bare environment, no standard input, non-dumpable, Landlock);
  ``guard``: torch's global switches, checked around plugin code;
- ``launcher`` (harness side): the zygote, the party process's pipe and wall-time limit;
  ``host`` (harness side): run a role isolated, or trusted in the harness's own process
  (``--trust-plugins``).
"""
