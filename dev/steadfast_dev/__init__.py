"""The dev sandbox: simulators, the embedded dev stack, the dev-server launcher and chaos.

Everything ``steadfast dev`` and ``steadfast sim`` need to run an agent on a laptop
with no cluster and no API key. The worker runtime and the operator never import
it, and the production images do not contain it.
"""
