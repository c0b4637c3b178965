"""attnlab.graph"""
