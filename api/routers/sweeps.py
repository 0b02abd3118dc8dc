"""Placeholder: filled in by the jobs work (see issue 3)."""
from fastapi import APIRouter

router = APIRouter()
