"""ZEGO ZIM (in-app chat): a robot reached by signed callbacks and the signed server API."""
