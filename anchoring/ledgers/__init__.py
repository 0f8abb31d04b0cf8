"""Ledgers that anchor aggregate roots: the interface (``base``), the embedded signed file log
(``file``), any EVM chain (``evm``), and the choice by URL from settings (``factory``)."""
