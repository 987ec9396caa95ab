"""The agent SDK (:mod:`aos_gateway.agents.sdk`), reference agents and the simulator."""

from aos_gateway.agents.sdk import Agent, AgentRunner, Reply, Request

__all__ = ["Agent", "AgentRunner", "Reply", "Request"]
