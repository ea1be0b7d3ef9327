"""Fleets: the daemons of one config center as one fleet (docs/fleet.md).

Membership (member.py), rendezvous cohorts (hrw.py), rollout records (record.py) advanced by
one elected controller (controller.py, decide.py), the restart semaphore and the admission
(gates.py), one small backend per center (backend.py: etcd.py, nacos.py). The daemon runs
it as a feature (feature.py); the core only knows the two Protocols of core/gates.py.
"""
