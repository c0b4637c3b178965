"""attnlab.audio"""
