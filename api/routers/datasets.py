"""Placeholder, filled in below by the datasets work."""
from fastapi import APIRouter

router = APIRouter()
