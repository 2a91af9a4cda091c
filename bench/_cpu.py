import harness, ingest, profile_batch as pb, random, time, os, sys
os.environ["RATE_LIMIT_INGESTION"] = "100000000/min"
src = ingest.prepare("cpu")
harness.django_setup(ingest.SERVICE_ENV)
from django.core.wsgi import get_wsgi_application
import payloads
app = get_wsgi_application()
t = payloads.track_template(random.Random(1))
for _ in range(20): pb._post(app, "/v1/track", t.render(), src.write_key)
bodies = [t.render() for _ in range(2000)]
c0, w0 = time.process_time(), time.perf_counter()
for b in bodies: pb._post(app, "/v1/track", b, src.write_key)
print("in-process CPU ms/request", (time.process_time()-c0)/2, "wall", (time.perf_counter()-w0)/2)
import cProfile, pstats
p = cProfile.Profile(time.process_time)
bodies = [t.render() for _ in range(1000)]
p.enable()
for b in bodies: pb._post(app, "/v1/track", b, src.write_key)
p.disable()
st = pstats.Stats(p); st.sort_stats("cumulative").print_stats(30)
