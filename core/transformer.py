# TEMPORARY SHIM for experiments until the lead's core/transformer.py lands (not in the repo)
import torch, torch.nn.functional as F
from torch import nn
from core.attention import scaled_dot_product_attention
class MHA(nn.Module):
    def __init__(s, dim, heads, dropout=0.0):
        super().__init__(); s.h=heads; s.qkv=nn.Linear(dim,3*dim); s.out=nn.Linear(dim,dim); s.dropout=dropout
    def forward(s, x, mask=None, position_bias=None):
        B,T,D=x.shape
        q,k,v=s.qkv(x).view(B,T,3,s.h,D//s.h).permute(2,0,3,1,4)
        o=scaled_dot_product_attention(q,k,v,mask,dropout=s.dropout if s.training else 0.0,position_bias=position_bias)
        return s.out(o.transpose(1,2).reshape(B,T,D))
class TransformerEncoderLayer(nn.Module):
    def __init__(s, dim, num_heads, *, ffn_dim=None, dropout=0.1, attn_dropout=0.0, activation="gelu", norm_first=True):
        super().__init__(); ffn_dim=ffn_dim or 4*dim
        s.attn=MHA(dim,num_heads,attn_dropout); s.n1=nn.LayerNorm(dim); s.n2=nn.LayerNorm(dim)
        s.ff=nn.Sequential(nn.Linear(dim,ffn_dim),nn.GELU(),nn.Dropout(dropout),nn.Linear(ffn_dim,dim)); s.d=nn.Dropout(dropout)
    def forward(s, x, mask=None, position_bias=None, q_offset=0, k_offset=0, context=None):
        x = x + s.d(s.attn(s.n1(x), mask, position_bias))
        return x + s.d(s.ff(s.n2(x)))
