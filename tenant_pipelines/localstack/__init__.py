"""The local platform: `tenantctl up`, the edge gateway, and the reconcile of tenant workloads."""
