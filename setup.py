"""LogHog: loghogd (the daemon) and loghog (the client), built from one source tree."""

from setuptools import setup

VERSION = '0.8.0'

# What loghogd imports beyond Python, and nothing else: loghogd/cli.py names this extra.
SERVER_REQUIRES = [
    'python-daemon>=2.3',
    'lockfile>=0.12',
    'python-dateutil>=2.8',
    'croniter>=1.3',
]

setup(
    name='loghog',
    version=VERSION,
    description='LogHog: syslog + logrotate in one package, for Python shops',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    author='LogHog developers',
    license='Apache-2.0',
    url='https://github.com/loghog/loghog',
    packages=['loghog', 'loghogd'],
    python_requires='>=3.11',
    # `pip install loghog` is the client (loghog), which needs only Python; the daemon's
    # dependencies come with `pip install 'loghog[server]'` (loghogd says so when they are missing).
    install_requires=[],
    extras_require={
        'server': SERVER_REQUIRES,
        # A faster JSON decoder for loghogd ([server] json_decoder = auto takes it): about
        # 0.6 µs less CPU per message (benchmarks/README.md).  Not in Debian bookworm: the
        # package uses the standard library, which stays the reference.
        'fast': ['msgspec>=0.18'],
        'test': ['pytest', 'pytest-timeout', 'hypothesis', 'prometheus-client', 'gunicorn',
                 'django', 'uvicorn', 'celery[redis]'],
    },
    entry_points={
        'console_scripts': [
            'loghogd = loghogd.cli:main',
            'loghog = loghog.cli:main',
        ],
    },
    scripts=['scripts/loghog-server-cert', 'scripts/loghog-client-cert'],
    # The license is the SPDX expression above; a license classifier beside it makes current
    # setuptools print a screenful of deprecation warnings on every install.
    classifiers=[
        'Programming Language :: Python :: 3',
        'Operating System :: POSIX :: Linux',
        'Topic :: System :: Logging',
    ],
)
