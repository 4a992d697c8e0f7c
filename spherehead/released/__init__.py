"""Released network pickles (EG3D, PanoHead, SphereHead) read without executing their code.

    nets = load_released('network-snapshot.pkl')        # G, G_ema, D on our modules, to train from
    G = load_released_generator('network-snapshot.pkl')  # one generator, eval mode, to render

Modules: ``reader`` (the restricted unpickler: module records, nothing executed), ``family``
with one module per family, ``eg3d``, ``panohead``, ``spherehead`` (what each does its own way,
for G and D), ``generator`` and ``discriminator`` (a record -> our config and tensors, checking
that nothing is missing or left over), ``load`` (onto our Generator / DualDiscriminator).
"""
from spherehead.released.discriminator import D_CLASSES, ReleasedDiscriminator, describe_discriminator
from spherehead.released.family import RELEASED_BOX_CROP, ReleasedFamily
from spherehead.released.generator import (FAMILIES, IGNORED_PREFIXES, RELEASED_FAMILIES, SR_CLASSES,
                                           TRAINING_ONLY_TENSORS, ReleasedGenerator, describe_generator, family_of)
from spherehead.released.load import (GENERATOR_KEYS, ReleasedNetworks, load_released, load_released_generator,
                                      released_state)
from spherehead.released.reader import (NETWORK_KEYS, STUB_MODULE_PREFIXES, ModuleRecord, PersistentRecord,
                                        RefusedPickle, RestrictedUnpickler, read_network_pickle, record_tensors,
                                        select_network)

__all__ = ['load_released', 'load_released_generator', 'released_state', 'read_network_pickle', 'ReleasedNetworks',
           'ReleasedGenerator', 'ReleasedDiscriminator', 'ReleasedFamily', 'describe_generator',
           'describe_discriminator', 'family_of', 'record_tensors', 'select_network', 'ModuleRecord',
           'PersistentRecord', 'RefusedPickle', 'RestrictedUnpickler', 'FAMILIES', 'RELEASED_FAMILIES',
           'GENERATOR_KEYS', 'NETWORK_KEYS', 'SR_CLASSES', 'D_CLASSES', 'TRAINING_ONLY_TENSORS', 'IGNORED_PREFIXES',
           'RELEASED_BOX_CROP', 'STUB_MODULE_PREFIXES']
