"""How a group's leader carries out a membership decision of the metadata log.

One rule for the metadata group (a registered broker, or a new incarnation of one) and every
partition group (a replica whose broker registered a new incarnation): the new member joins
as a learner; once it holds every committed entry it takes the old incarnation's place (a
voter is promoted before the old incarnation is removed), so it never votes or counts toward
a quorum before it has caught up. One change at a time.
"""

from __future__ import annotations

from broker.core.host import GroupHost, HostedGroup
from broker.core.ids import Member, member_of
from broker.core.raft import ConfChange, ConfChangeKind


def keep_member(host: GroupHost, g: HostedGroup, member: Member) -> None:
    """Leader of `g`: take the next step toward `member` being a member in place of any
    other incarnation of its broker."""
    raft = g.raft
    conf = raft.conf
    older = [
        m for m in map(member_of, conf.members()) if m is not None and m.node == member.node
        and m != member
    ]  # fmt: skip
    if member not in conf.members():
        host.propose_conf(g, ConfChange(ConfChangeKind.ADD_LEARNER, member))
        return
    if not older:
        return
    pr = raft.progress.get(member)
    if pr is None or pr.match < raft.commit_index:
        return  # still catching up
    old = older[0]
    if old in conf.voters and member in conf.learners:
        host.propose_conf(g, ConfChange(ConfChangeKind.ADD_VOTER, member))
    else:
        host.propose_conf(g, ConfChange(ConfChangeKind.REMOVE, old))


def stale_incarnation(g: HostedGroup, want: Member) -> bool:
    """`want` is not a member of `g`, or another incarnation of its broker is."""
    members = g.raft.conf.members()
    if want not in members:
        return True
    return any(m is not None and m.node == want.node and m != want for m in map(member_of, members))
