"""Real-time serving: the HTTP API, live events, the model registry with hot swap, A/B tests.

versions     model versions on disk: manifest + checksums, the atomic `current` pointer, refusing corrupt ones
training     a new version from the event store (`fusionrec train`, the server's retrain)
histories    every user's history (stored + live events), the catalogue, online trending counts
model        a loaded version ready to answer (its maps to the server's item codes)
recommender  the answers and the fallback chain
events       events in: shared validation, group commit to the store before the answer
forget       removing a user from the store and every model version, audit-logged by pseudonym
ab           experiments: bucketing, impressions, attribution, z-tests
auth, limits, metrics, schemas, settings   the HTTP edges
state, app   the running server and the FastAPI factory `create_app`
"""
