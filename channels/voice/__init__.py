"""Voice calls: channeld as the LLM of cloud voice agents (ZEGO AI Agent, Alibaba IMS), answering
from and writing to the same conversation as the user's text chat."""
