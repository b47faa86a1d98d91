"""LogHog: loghogd (the daemon) and loghog (the client), built from one source tree."""

from setuptools import setup

VERSION = '0.8.0'

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
    install_requires=[
        'python-daemon>=2.3',
        'lockfile>=0.12',
        'python-dateutil>=2.8',
        'croniter>=1.3',
    ],
    extras_require={
        'test': ['pytest', 'pytest-timeout', 'hypothesis', 'prometheus-client', 'gunicorn'],
    },
    entry_points={
        'console_scripts': [
            'loghogd = loghogd.cli:main',
            'loghog = loghog.cli:main',
        ],
    },
    scripts=['scripts/loghog-server-cert', 'scripts/loghog-client-cert'],
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
        'Operating System :: POSIX :: Linux',
        'Topic :: System :: Logging',
    ],
)
