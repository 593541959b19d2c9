"""The control plane's routes, one `APIRouter` per concept."""
