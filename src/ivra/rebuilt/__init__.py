"""Faithful rebuilds (our code, written from documented facts) of VLA model structures that ship only as
remote code which cannot be installed here: OpenVLA / OpenVLA-OFT's Prismatic model (``openvla``, needs timm 0.9.x
and transformers 4.40) and FLOWER's remote-code Florence-2 (``flower``). Tests and tiny policies use them; a user
with the real checkpoints loads the real classes, which the adapters recognise by class and module names.
"""
