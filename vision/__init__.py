"""attnlab.vision"""
