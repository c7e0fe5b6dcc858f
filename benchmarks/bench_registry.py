"""Registry check benchmark: 100 images already pushed to a registry on loopback.

Prints, in one run: our no-op check of all 100 (manifest + platform verified, concurrent,
kept-alive connections), and flyte's checker (`LocalDockerCommandImageChecker`, one
`docker buildx imagetools inspect` process per image) over the same 100, one after another as
its build path runs them and all at once. Needs the engine set up (fixtures/engine/setup.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_identifier import best  # noqa: E402 - after the path set-up


def seed(host: str, count: int) -> list[str]:
    from engine_support import push_busybox_tag

    return push_busybox_tag(host, "bench/app", count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from engine_support import engine_problem, registry

    problem = engine_problem()
    if problem:
        sys.exit(f"registry benchmark needs the engine: {problem} (run fixtures/engine/setup.sh)")
    from flyte_images._registry import check_many

    with registry() as reg:
        refs = seed(reg.host, args.images)
        print(f"{len(refs)} images pushed to {reg.host}")

        from flyte_images._registry.record import PlatformCache

        def ours(cache: PlatformCache | None) -> None:
            options = {} if cache is None else {"platform_cache": cache}
            found = asyncio.run(check_many(refs, ["linux/amd64"], **options))  # type: ignore[arg-type]
            assert all(r.exists for r in found), [r for r in found if not r.exists][:1]

        # cold: nothing known about these manifests (a fresh CI runner): manifest + config blob;
        # no-op: the digest -> platforms cache knows them (as after pushing or checking once)
        results = {"flyte-images cold": best(lambda: ours(PlatformCache(None)), args.repeat)}
        ours(None)
        results["flyte-images no-op"] = best(lambda: ours(None), args.repeat)

        def head_floor() -> None:
            """100 HEAD requests over one kept-alive client and nothing else: the least a check
            that asks the registry can cost (the same accept header, concurrently)."""
            import httpx

            from flyte_images._registry.wire import ACCEPT

            async def run() -> None:
                limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
                async with httpx.AsyncClient(limits=limits) as client:

                    async def one(ref: str) -> None:
                        host, rest = ref.split("/", 1)
                        repository, tag = rest.rsplit(":", 1)
                        url = f"http://{host}/v2/{repository}/manifests/{tag}"
                        assert (await client.head(url, headers={"Accept": ACCEPT})).status_code == 200

                    await asyncio.gather(*(one(r) for r in refs))

            asyncio.run(run())

        results["HEAD floor"] = best(head_floor, args.repeat)
        try:
            from flyte._internal.imagebuild.image_builder import LocalDockerCommandImageChecker as Checker

            async def one(ref: str) -> str | None:
                repository, tag = ref.rsplit(":", 1)
                return await Checker.image_exists(repository, tag, ("linux/amd64",))

            def flyte_sequential() -> None:
                async def run() -> None:
                    for ref in refs:
                        assert await one(ref)

                asyncio.run(run())

            def flyte_concurrent() -> None:
                async def run() -> None:
                    assert all(await asyncio.gather(*(one(r) for r in refs)))

                asyncio.run(run())

            results["flyte one by one"] = best(flyte_sequential, 1)
            results["flyte all at once"] = best(flyte_concurrent, 1)
        except ImportError:
            print("flyte is not installed: its checker is not measured")
    ours_time = results["flyte-images no-op"]
    print(f"{'checker':<20} {'seconds':>8}  {'per image':>10}  vs no-op")
    for name, seconds in results.items():
        print(f"{name:<20} {seconds:8.3f}  {seconds / len(refs) * 1000:8.1f} ms  {seconds / ours_time:6.1f}x")
    verdict = "met" if ours_time < 0.25 else "MISSED"
    floor_ratio = ours_time / results["HEAD floor"]
    print(
        f"goals: no-op check of 100 images < 0.25 s ({verdict}); no-op <= 1.3x the HEAD floor "
        f"({floor_ratio:.2f}x, {'met' if floor_ratio <= 1.3 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
