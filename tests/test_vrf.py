"""RSA-FDH-VRF (RFC 9381 Section 4): the RFC's test vectors byte for byte, and what a VRF must refuse.

The vectors are all nine of RFC 9381 Appendix A (A.1 RSA-FDH-VRF-SHA256, Examples 1-3; A.2
RSA-FDH-VRF-SHA384, Examples 4-6; A.3 RSA-FDH-VRF-SHA512, Examples 7-9; the 2048-, 3072- and
4096-bit keys with alpha "", "test" and "sample"), transcribed from the reference generator that
produced the appendix (Leo Reyzin's NTL program in the draft's repository), whose self-test checks
these same pi and beta values. Keys are hex, big-endian.
"""

from __future__ import annotations

import copy
import pickle
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fabric.secure import VrfKeyRing, VrfPrivateKey, VrfProofError, VrfPublicKey, proof_to_hash
from fabric.secure.errors import SecureUsageError
from fabric.secure.vrf import SUITES, mgf1

KEY_2048 = {
    "p": "efb52a568fa3038fffb853e2183791c6bc81ceee86d20e8f9b6401dc79a8f1f6248d3a25fdb3f99245fce41667da038f"
         "59745b87cc1aed8b4a9c1d74e7d5c16cf7343f2b12f1b5055337369bf018fa07adc0d16f2164a516e80d2b4734f0c656"
         "3d6ee6d4a9e1a54e300cfe9ee679afc3d14a152dfb49b6cfb208bbf921f764af",
    "q": "ecbca5ee88bbc635d8263aaba84f6502fdb2b4998a40f7c149133d840b6b1bd9a972fe2a981c770272b78fda213f76a0"
         "62dd865dd116d4c8980975ee9347fe0f500567e51d78dbee4a34e626051cf018d7feb72f19189525d4f70b6467d0cef5"
         "14633ab08a9e7a9ec632064b7b5e3e82128fe563757a614092fc5cf624d10e1b",
    "n": "ddaba77202bafb796b85bcec98958aa58ae2d117cbc66a6e75c4c2af983985a3064eaef93e2b03393256d94d75d6a665"
         "6b2956524ed8711898a0c3abae84371da0283bc5f433fc384d810a3c118ed302c0b03da16bee70b80ba3480e7acc1eb3"
         "58b3f20fbe90cc4c8a7e2ba9e28b2a3800a5efbaa3c264f79b231f7cdc9577818df1bac60ef7a3f78a44f046fd29b068"
         "9556da7a7f61eefe67427f3f691aee0a4b1efe2ee2e0e6091143ebb7d69254c9d8ab01ff5e0ad7329f566082f9251e64"
         "f436c547e68de75351ea3a09746ceb7efed2d234121088aaed01696583c172ec88bc173a0d4d8ec43f4dcc18ff837931"
         "7e83ef9685536283368c9c6deb783075",
    "d": "d5c5ceab929a841e2a654536de4788f7f0a2a086d44bbb245f8aab3df00db924e8d644c3b502820f4cce98adacf09e73"
         "bc0e9762b50ae2b697aaa24914fa08b51758f59c07cf827341bb2a0597e126f9c69db031d60692c9cadf62842444696f"
         "08223154a1b0be752a325725748644e6d12935b1c66f983379773bcc8c65d06262e93b5bb774dd2784265c23e9a7fc5e"
         "8871eb6bcc9968a6bc360a98874b623ec59f41af0a9ecec6af095cb7e5aca11472363950dcbbfcf678fe003358b4ff00"
         "60a391daa45a1bd81c166b6221fb07e4f5da75e27d8d5fdbbf87ecbd7f5a4d804597070faaed22f197511b2187888166"
         "89375245ddf7fa12337f3e7e898fb9d9",
}
KEY_3072 = {
    "p": "ee5adea28491084e6635bd73fd95649915a11da410d3f361c8eccc90a4b83425146da7b9e9d3994fd37d5fad7fb759ae"
         "451eb99b1102d4671ead23a2925133d19df49cf9d7e9dcb69fd7555ca095338d0d2a84abb6825050eaf5fffaeff17ccb"
         "0833c6079081dfcbd98ced36a593557d29d64b0e0253ce2ee4e07fe2a06269dfe5ca230fad221a593a69d9534b2521c1"
         "b41d116cafdee02106228ff41433605453e237777626953e79b46a84f50069e25b4f50496a928708abce30559eb183cf",
    "q": "fb585bbc12f5695951f70a25e27682dc568acf56115ad749709b2a6e915cdd66dfa06db09b390c00b7c7ebeea00845f7"
         "3c999d8ea9352b1128bdf10113c7500b76a03f6b38d0920b5589961549be3d841ccc306f3edd600a53b4b9d4fa1249af"
         "87af58dfb3ed694289477e853f7d062f58911f7bdb98033b001ee90f11b78f031cffac2b5a07e11b01a2a6c1cda059a7"
         "28f8253a5ff87267623253fc022d3993b27e2f344b99eb6072ff7c7ee160724f8fbca562be49247ffae42b55ea79dad5",
    "n": "ea055cef495dec2d8fb3aef519ca87bd1575fa0ae15dd433f4a5f6c40d34ed6ba2388172ab7d2183ed970a669d427dc2"
         "774ced66a3f082b8e23e94e7de7532f4f30bb4a5bbf2e1db2cba0752858a7c7a9bb892c5d6af7e90a7cee8f0097d1449"
         "8c8b482f86348640af61b66640538e834f23ba8f906048db0e57b6fdc162ba2a8a0eaedd5423f23d8f89413223d89f47"
         "3029cba11a211eb59e41fb8f0b8ddc651d115d9f07ac30296485a9adbd71cc5d9e4a448bd6d70785e838a978b2e66513"
         "eb897c962e85f00a36cc0a3a613183d8bd1572f895901eb8155af9797dbd4aa14726f415712bf0eb29fa0a9e938cf532"
         "5def05d3af7e686227456d903233e316c8cc50341615e59b665f0a4a2c32cfccbf9469bdf89564481fb7afc27a712774"
         "1f79424e0a35cdc466dd33ef5a2067f75c86e06af9c03c68c6e78be5f1a4f49ea03569cd9f74c3a0ff290ca4ce2c2fa5"
         "b770ef8032b26a517c257b7b1c424622c5c04cf20f2290a268939e0cc79dfbac71842f94727b07bfafaded7db6c7f13b",
    "d": "6e68e957dbfd7c1862dc1b87780b9dcf0ff9016770bc9c09873b66194941d76218bf2013c1e4df9326dd4402f5df1106"
         "56d2ec8ea87a28b2a1cb74e590872aeb765fe772ea21c57d6ab4ba0fad019189273f05c061719afd14af02277dd28d67"
         "c5ef50b75b521ca51819b9bcb44cb7c82be66776a45f490050dc0171e77374f1ed00d06f8beb09b711a9682107d8840d"
         "4a23edf6ac25441fdbf2b584dfa6a67cee21eb51c484f09416e11914e774713f1a17600fb9e4e99fbbd83fdcba4b0914"
         "5dd9809449a1713777161c912d5d595362314b0ea9d1199e97780e8b3293a39af4019fcc746aaf78dbb7db06852c3358"
         "a9ed02ab1d15831a148b27b932c117445a4a6f5114edfa3ccc9a9862df714b78a5362aab5e30501b4a729af73e3cdcab"
         "e19aac4928b668969780ad33d9df206d904b978a055f4abbc64987744526856e16ef55962453e3ed7a8055b0d79d051c"
         "50c94584ec7501dbd4856d7a21e43f25d8749e683cca2f53f575af1d80f39d8e6932ffdf201d179cbf98314c4048c6c1",
}
KEY_4096 = {
    "p": "ac803464c8b2082153e15d5a0698d0a2990397fa01c1edd6171a5315e743c99feb7acd31c37529d4f83405e657c39048"
         "8d19f7da9ef9d9f9cff4b460d2a26eb10f90cf4aaf55a19e21dc3bb697723a673e12bbc6580adc7bb72adaddf4682d65"
         "6ff5b992e62379bc7b0ac977f2bfbcfac634e04ed597ef302684be72c6bf7db10b80f452d412d09e63e017acba378ccc"
         "6ea58e683e5641d1e72248f3201a5632f4af7525e91f9e0733731d264fe36802f416cb3e182b21e67a12e3bfba9a9cf4"
         "0a45ff32addfae78063933120238ac61fbb995300a8602aa84f993bed375d6ccba86ad0c8efa5f0950aa2c92779febce"
         "9d05fa7a1f0d6e5c0d785de93c108297",
    "q": "feb39bb6ee78adfa524e9c0821f60c20d3cff74f8b49731d67ea27d218bcb20c87498d30dfd398bc23daff7b33dc330d"
         "b93e6c0e5e6196e035446c6db7cfdb9868b9518d94670b31f9c4d2109cf32c9cc8ac2fc4a6c2e1078510522c81610a81"
         "a707997933ee24030b572a76ee51aa683312ecaa51d8558b3b19cccf65fc867354ae193fd5c4f5d5a7180c5ca1e90fcc"
         "42f6915dff69a3d1e49046f6c3ef841b262ba89ddcfde2ed3caeb5bd594181a76f6f1ce01fc65c6f925f6d5b77037c2c"
         "bf7b6047e19f7b9c846c80238f1c8284c33bfd90c79de91381bb883b0de568aaf4b4a3c3f9c98f92e9f6a51f010bcc1d"
         "acfd72bfdfda29f527d7f4913153bef7",
    "n": "aba03a8d8527bfc0cbea1cb9a100f4ee7870aedd74a6406f108f7a07f374336025357e256d655b342d73369102d03c7d"
         "cf3c14ed70aac7ebb62498c570068f71f1f165e14527f96d946ba839412252eacea604e7d6fd47a0bb9de776679fa9ad"
         "6485a076fda04a2015322626dcd2eb91d6b6248802e6d453eb4cbf5e1bfebed02d6ab36cfe3dd1e8b9749d4853a02994"
         "0a0bed3aa3128fd8e2e6cd1115db15405bb3837012f56bdc5a6895ec5cc6bca52f7952cfe3c7d5d81d4d3d1c9a29a429"
         "eeedfbf58da0a5b17480875b8071f49eb568fc8d8c023c83b3ed870c3775aaf0578485d757b4ab18d8e5fdb30c2b5586"
         "047e6203ab1636e376f1c7031f171e2807a2058ece890cc8fae29ba819df76b45ddb514caee63db1c5e7a3af7468febf"
         "f82bfe2eb79e3c5d1383b7ebee86f02e9cc1853f0f4486f7eb8fee23a2f794317ffd1c39471086dfbfc0e3c0f412f917"
         "225f5c551557f38c11f172eca257e4b5908a571e4daa7c7434903701f21937df87d10de9b50ada97e65855d5e786db8f"
         "3f86248b55d999ec31538bd1a409f3e13de46dccc05325774e89016708f8a96240ae1c16641e8b12ab07257e88aa50d3"
         "546e7a91073d85ed601775a3c08e9b7c242d20664dfd4e70a05218d9f2c7d760fab3cd772d9362527917cf5b51817e8c"
         "2aef51cb3b0dd8cb838097e513537f1d9c3c4708f44ed270db963c7d72cf11b1",
    "d": "1efd8dd524282b4deb04592f83cd226d353e53b5156d37d15652321ce16f281fc258487105b1f9a81054ef937bc89243"
         "bd7a01e56624d078d5a9021514c77a7b7eceb230dd45fc9a36e4c1b9a4f347b9b29af3e3d14466fcb5242c398b389f70"
         "f9e7cf33ed54564e38c597720909e513ae8bb149060d1c6612e506e13d78e087c2cbb39e88c22cf73315c598dbd0ddf1"
         "276743ed04a943644c84949ef32d5e4702c80581e54a7fb18879be28b21008dc63182b45f2c190f1b748cd322efc39f2"
         "807c64b4d06023cb49583418e7b6ac0f447eb2abf48e2ad335583cbc8dff2760c2cce1462346326708336f7e374253ed"
         "213e990044927c52d29591f414571e509afc2396a6af9843303a19673bcdec1e3fc7c0d6c3f43b4bf88ce83e2bdcfb5e"
         "39069fe32800cf3f6f6d9917b8083a66ce23a9ab5b0c95bbcc6dfc21d38dadecc20725b13ce2954ba1bd45ec151a8877"
         "fed317cac60b2afaa96c826df6d1c48e7c10649dccc75bdf905c362c6934da06c3ce30f5befc1cf776d7fda673625147"
         "b1108ecb5473f7f588279533eb184d748230443694b9761b01532ba707563ffa4962321e44fdb710025e8a6e00d29bf0"
         "1ea040618ee111b5d79ac860083f91aa614777cc99d739458f7c53d63cea7155b118068e0b30b35ed6d0cfc75672f18d"
         "075157a3ed31bfa1ce2cea234357ec76117cc687c274636077abc437cb70a029",
}

# (example, suite, key, alpha hex, pi hex, beta hex)
VECTORS = [
    ("Example 1", "RSA-FDH-VRF-SHA256", KEY_2048, "",
     "14234ff8a9487e1b36a23086e258135b8a8a7ff2e23f19c0dfeca0c0a943f119ebd336fdc292ef67b56e32ba06f9941893754a8b97"
     "c82f68974b2b34c17f6d43bfd55eb110cd7ea3452d59a24e4ddb8d4cdf040c814e22e3537ca09c2e2dc5dd8ea281e6492ad335378f"
     "9f437eed30c51eeeee66ef14efb4000c75c802e9c5a6bb8039c0258d4347981159d0ef6990b5e9c8ac2fb03915d7ff1ffa0626e2e1"
     "1714a63342e59124c1fcea8e2816c1d9a7751feaaa66cf6c82cd3c58ffde66460d98246ab358cc33baefae4dfb0d191e9b6d6c0e3f"
     "92c35200408925dc8bef39b78d1259f8163a5003a693555f05290ef2e68345f27c6e2a8847c5c919d92e7505",
     "79f0615d4677fb72571889453644013f1a31b08d222e3cee349d64ce1c41045a"),
    ("Example 2", "RSA-FDH-VRF-SHA256", KEY_3072, "74657374",
     "69f6042d400dfad4bdb9974fb73d12ec7823c6632df6b0a97ebc14d8a443f74e1eb1a99b37204ba5c7e53bdaf7e3e3fae9efe47cc0"
     "1d0b061585c8d757ecf00663b3e1bd447d55b6ebd066b814a8d9c4434b224e9cb053a1fd038a58f3bf6b0c75b6f48f3c8d1ca398a7"
     "30c133f86f244655f24c445324fdacd291d6d907f93efb24b59e509f2f370392f5e262fc106292792352d93800f0a1e3a389786619"
     "a622f6005cab78ea5f0b5b7ca91ad2a9c6c34fc4a3f9b0332b99e907ffa7f750cdc8342e12da78f13ad49953bae1751c983ce3cd33"
     "35288ac856f85057a7f05acba6465a1c6901ba30bc65b79fb7a847c42a5b4942d600ef316030f2ccafbc6f2e1ff0b46fb5c8517cd9"
     "8c93f81acf370cfdab559bb4270d07db5466e2342d56c476089f473840434cbcdbd1853b487a6df346208d12c17a48fe50b73b96f6"
     "40a9761f570a516f6157432b83dd18a1d05cc27b6f283a02fcfda147cf1471772e469961004bde7fa15857e7bf97b5a83c33fddbd9"
     "f4b2e2488f4ed5f7463c93f30b",
     "bfe966f3fabde6f38a2792ad59bc836bbca39de6eff64f15a42886deff6dfcc5"),
    ("Example 3", "RSA-FDH-VRF-SHA256", KEY_4096, "73616d706c65",
     "745cc4b6cb75b925194374cdf91b498e8d687c5d9cae1eb5352446c554c2c43ac4aa3e2db5cf5e366df635ce156a277ebdbe78c559"
     "8588c98257069253127e57c9735b498f2939f14e1d019795cbd74cee2693acda2666624f174e8f666494aa12641bce0677acd20e55"
     "52d2690117bddb38678a18acdc380bd9d93f3b10960f9be0c141fc14f5f30da324ff14020cb5b8aed9fbca3fc44b4973d8e5527bd8"
     "1f5ae5da67e5cc995abd1f7f9cdd3fa89b243fd4d5d5086ddb4eed77a2851fda1d4463f5ee037a4015aa40c420c2e609d5d0da4ef4"
     "a1622131022bdd9c9dc26d177b392663ea42050ef485fe9d53a8d28d84b82a21101bed5b213c82b578ce7c9c6f7c1bf9eca3c248ac"
     "e9f8835f3850158749111ce1a3bdf5766add72a95a47c8866a4817c42c5cbd85d7bef52afab567e564f6625be9e04be6f7da012af6"
     "8e6623ce4f29c692ba0b5f7665bb435a2168bd3b88aae0c6168bb87ea6977f35bb5ad833d96dd14d340f2a67b241b01fd8caf41584"
     "2fd0a9dd5f4ccf4e70f15efdb85332e1df2bb186be15f7195176435e01bfd00592710023c3a88ac0eea7189b32296f865a31037511"
     "1a5f11b74d0c74b98dfe4c41ccbe695ea801ba47f37b878c1ed0fff8302705b63c891209ea63defa892969e015a86d979451894445"
     "24e5fb660f2b9d1dce337a12e0d003ea6262ca3194515cc3aa10b1a03ac9dd6995b54d",
     "b663c5f90da1c12cd5d0e6d049679459e6f79f9fe16bc8b8e7e4d64d66500bd9"),
    ("Example 4", "RSA-FDH-VRF-SHA384", KEY_2048, "",
     "cffe6067bd9a1285dc1e8e543e8582c1250407cbfbcb2d01c4ddbc0d4ecb5edeb721fb33147cf95f3084f7ce611f9877814770b14b"
     "8a671abc7ff085cf5cbe91e72d17f076d62db478d4758412a4e4b77a5591dc32b764a501d27e34e56189ba7347a96f141ed1290f8e"
     "f7c4ce4009a9aba0715cbd0148721ea72bce00a22e59460421a21e4d121fc0b4eda62479d93724afae7556abe66326487be38cfb79"
     "5ac1968c33a3890f2d8c0f7dfbe88bc76f16cbfd2b0f7ee8663abfd7b789caa5f6c77dd1ca991c9a9cc532f7550ad6184c8ece12ca"
     "4bea7e67f32405416a1f83245b09d06e7b4214157fb444be12a2eddc4381678f2b862fb240fcedd2da7ffcb3",
     "dc37e83f8de0e990abada5096a05ca74754cfe7fe8e46b831e24100919415415dcd5a305f5fb8195713cebc78649c8d1"),
    ("Example 5", "RSA-FDH-VRF-SHA384", KEY_3072, "74657374",
     "22c9278e7171183cf6a3ce108f0400e308a9177c39a171f77777c106c966eb041824ce43fa56c5c77576646dd110e0b5d7f838bd5b1"
     "d1bf2c1feb1520397dd52d3cea6dbb49d786aa3bf3f5235e7692e583d290c7192102a6e0cb64f5229a326d4d00267fd75aae9687167"
     "ea0d3d450b2d63519ad605e64c77438728a190a129b1163939a5b7b0721b8d81efbf99a96944f63bf80ecc932fe40402d67c3e099a3"
     "17cd1d13ac6947096308050ea6dad18fdb0958ae565d07d29e619673798f52b8d1dfdbf29b4641324ea6db5b9f35870acde7bf68e08"
     "29534d1c1f43ca9a16861efd82fb883e35d581f613d2dfbc89d01a84fdf081a3a850f2e865188cd995857222160c54780dc310a6ec1"
     "00b9bac30f3af92e641360cad8dc255b56fa28e88ffcbef8ebe6ba8557e4ec44a7d0ebef882ade36db0d89be71ecaa2b35026c9d328"
     "d2384b54ae68de2ea70160ddde9aced5a8d896590fc185b408732cc04a249eff27501594902bf3af4a3743c4da50c5d62a74746007d"
     "edb8358ecfef78c75ab",
     "5bdf742667ad10080f4ca573ec66f751e82e4077d0db1b281df421af68d39412e70362dc5101b4b46e1e453eea7e0989"),
    ("Example 6", "RSA-FDH-VRF-SHA384", KEY_4096, "73616d706c65",
     "89d801e364fd48c3b8672e7d7abd8a2a1e5bd36bb1e38af5aaefa2f01cde686fa2e33f88fdcc8eb3babcf1c66cbbf7dcddb61404181"
     "3990787be5feabe86bbec373d2cbf7c080caa0e37a339d5de1d1455de28f9bef76cd72500c669e9cab4599b55dc155d9dd5810174c1"
     "70f646d3b0b459347c17347c0281eecf5055cf887d6bd0a2c962c77d5ff9355a53cea64c34ea0888110ec4eb32da69022e293a8843d"
     "4c06c9d6e020c594335720467a8337c6a939fb2c5d710f7bdab48a52f4e7483dae062c1b9f66f7c9038ba9ceef3d61cb4cc004319c9"
     "4a267a2425b5f042cd7f1a17922d6596a88a6fefaef41fc87742f2badee7d7613179589b4d02611ac8fd7895d926f484f79542cdf7f"
     "034dd536c9596da2f588ac9840f6bb05875bd17107e7458cc5ea368a7699fd60c35b54253a718c26cf518712be9d86213b2c6bddd0b"
     "7dd169f9240e77bfc44223675454f9c5596ad2e6e607ea65011a721ecbfa993172ae372ae8743779b33278d25e11ced77b14bc481fc"
     "e60e4fc10a8a211d8b359906509d6830c653d91c1a86865219db43f62c70ac6780644d2bd73c5c256527a3eaefaebaf1f220732417e"
     "17dbf598636616f70f2088969ac796a853dc8a5f270a1c505797e83d1675e4f40b59c150ca06c49bb0967a2e0c7e74eff9e182d0f7b"
     "b6f54f68fe788b89d2191c87bbf7f3927978449c2174baa581dc64a9c58ed",
     "8ec4d150788513c85eea3490d1a1ee1b7a397602d3f9c8b467527f09fab5252e539f82e8002825608295ebbba19644dd"),
    ("Example 7", "RSA-FDH-VRF-SHA512", KEY_2048, "",
     "a280db108df5ad6ac1bed67efbc5c6fc6da0d301b9c0b41d26e379cd223c613c59d52c987e4baaa6de4de2103284ddd56aa0b662df"
     "e8faa8f6a503b83b7c81f481e23a08761d49a151ada1d9daa132138bbd6f80204c7fa87716b120df957224f92b32a3a0f96c3b2090"
     "80c408618a92382ab5575f10a57c24ee0ffd01d6b822dc36b27600bf36aafadf0a01e65aa6a0f2fc1a9dcd207d9bf5181a9ca69120"
     "e15410800a26efd3ce619349592eeff7b1851737bd033a83f88744ddd3d3e782efb6d2438ffda22ddcaa32c821c6730a05d5bdab88"
     "c354809d615884744ff10276496bee70b62feb6ed07a3948823e9ee2a453dbcd4450192c9de0128adfc7e147",
     "808ca1f8f66a48118aacb011394bd4e5f0011c89ca913943d467b81cc5c43086e588abdde061c3ee30f4c15b2a6b51ad0ada42c073"
     "7fd7b2206fb43d35c8ed22"),
    ("Example 8", "RSA-FDH-VRF-SHA512", KEY_3072, "74657374",
     "1aa828e0a751074fed2fa776fd29336a84987c064eeebcd3a8129fb688b47eb7109987d01db0c3624ba7cc75e2f1ad60f5e204a250a"
     "329048bc34df34d41bfeea6651774d249ff9fc29aeabdf524400527aa1c4100b1af86b2dcc2e7aecc77f386b80f29ccd807cb705b50"
     "57431832dafe56733a1e7bfcba1d052a26d1a8512f297b5abad5afd64fbcf21b57531a9b2c8217c0d9f1c875c196d998f61e8017f6b"
     "6ebe7317545ed390e18305bc96abb1514ec271963d02bed91ccf029d022189f84bac8cfa216da54e39919118348dfea6f4f6532b49d"
     "a7820ee2a21f42b762e107722ad0abf62271e0640d6b1c4d1a39b94ebd74b4283de2d6550cbdb1f29cac51671e9c8fc0ea0fdbb082a"
     "14a221e0531615f2bcfba0d70e99e4997cb00f81fcab2b955663220234a5e90f29bd08e6fa50dd92770d9e514e0f9eb27aee634877b"
     "cea681ffd7da2b5be2f80c1dde1243b17ac726401cf961c5ce06640eb93352402c1ebc59c92188c511b375d63124846b46017fe36dc"
     "13fc2d34dbd80b312e0",
     "9202b6715b7921c5eb35572ed9ebb85848d3345efadd665049ce889be46322586d4177864c9179468473518c6b6ac2e9c85ae5ee5fc"
     "d3c0d8e6d4d8f18be6238"),
    ("Example 9", "RSA-FDH-VRF-SHA512", KEY_4096, "73616d706c65",
     "17d7635cac33b0b72ea1c0afb1f681d1a96c5073ed9f88ed8bb54eb428d7b2db4ee3355eee512ddc7af50694b37fd389f990278e220"
     "95b2582c78c4ed6070b0c7382b0308b6d546141a9b0d6ebb3af97abd93c16a5d34a2d805d8aa444fed2297d017571a693d221fda094"
     "d40500ab9b203d397a7543e72b26b06e561d49696e01deebfed58b46611dd5a346e227d7519f8ffd1dc76a172c9f7f355c3e7e5ee77"
     "73edab00a22af5c39367f3779da68ce6da9f8a594f5f6149012501181653572fe5549a9c2bf36148b3bdc94feaedd600727fe5c11b7"
     "dcbfd73002ae08061cb4b84ba47f1bf8c5d46bc2acb7cb4964a6dca7eedc396e663a64121d93dade8b83cea09d76653cca1a8d20d6b"
     "7323a890651dc575025ba1be02d08c5946f50cde438339b06e8633198da0d467d2cac7d98ae62dd71353f6fb19aa9daac851d0ce237"
     "b21db93b91e518d5c1ac36cdf874975deb7aab3942acc3980f221f33ad1254eb8ac3138e087d045c4746e0b7eedcaf2a1a173559783"
     "eba8691555c1b0e468f8efe6501679b760038ed6fc9ce6aa5ae24b3f1178713793c8e5ee96035a2f0ee02e2d10ac098613358d3cff1"
     "0f4dff3437f2a48252c5d6805288fbd7ee05356f80db12aaeabf6638677abf5b8eb2376fb76861cf1b817d5a0b878dae6beac44f078"
     "f37d982d941a77582a77784fabd632e28d664d9f705f31e24d1ca623dfac7",
     "6026f6defaf534cc79ce7c1b0370fb53e4825d2d44f549f696e06d693c39e852e21a5e3b6ff093618dd277b40678957e1b90e8e6ca7"
     "42efed30dc309b3b242b8"),
]


def rfc_key(hexes: dict[str, str]) -> VrfPrivateKey:
    p, q, n, d = (int(hexes[x], 16) for x in "pqnd")
    assert p * q == n, "transcription error in the key"
    return VrfPrivateKey(p=p, q=q, d=d, e=0x010001)


@pytest.mark.parametrize(("name", "suite", "key", "alpha", "pi", "beta"), VECTORS,
                         ids=[v[0] for v in VECTORS])
def test_rfc9381_appendix_a_vectors(name: str, suite: str, key: dict[str, str], alpha: str, pi: str,
                                    beta: str) -> None:
    sk = rfc_key(key)
    s = SUITES[suite]
    alpha_b, pi_b, beta_b = bytes.fromhex(alpha), bytes.fromhex(pi), bytes.fromhex(beta)
    assert len(pi_b) == sk.public_key().k and len(beta_b) == s.h_len
    assert sk.prove(alpha_b, s) == pi_b
    assert proof_to_hash(pi_b, s) == beta_b
    assert sk.public_key().verify(alpha_b, pi_b, s) == beta_b
    assert sk.prove_hash(alpha_b, s) == (beta_b, pi_b)


def test_mgf1_matches_the_reference_generators_check_value() -> None:
    """MGF1-SHA256("deadbeef") from the same generator's self-test (RFC 8017 B.2.1)."""
    want = bytes.fromhex("a49eea4c082081ca8e405f9e8c880f57de8f7e2a121eabd1e2815c233b22e4538cc20abb816f996a86"
                         "b3c5a3bf047e8c4eab43a7158434aa5e57c28576f2e04cd3e83885d191ce6fddaff08622befb66ea1b2b"
                         "2ed092a90551d873303717cb605491a9ba17d6692cc489c606ac2429b69ac02a5cf350514df6b7d0858b"
                         "ab80ec")
    for length in (0, 1, 31, 32, 33, 64, len(want)):
        assert mgf1(bytes.fromhex("deadbeef"), length, SUITES["RSA-FDH-VRF-SHA256"]) == want[:length]


def test_a_proof_binds_the_key_and_the_input() -> None:
    sk = rfc_key(KEY_2048)
    pub = sk.public_key()
    pi = sk.prove(b"view=3 seq=7 prepare")
    beta = pub.verify(b"view=3 seq=7 prepare", pi)
    with pytest.raises(VrfProofError):
        pub.verify(b"view=3 seq=8 prepare", pi)  # another input
    other = VrfPrivateKey.from_seed(b"other", 1024)
    with pytest.raises(VrfProofError):
        other.public_key().verify(b"view=3 seq=7 prepare", pi)  # another key (and length)
    for bad in (pi[:-1], pi + b"\x00", bytes(len(pi)), b"\xff" * len(pi),
                (int.from_bytes(pi, "big") ^ 1).to_bytes(len(pi), "big")):
        with pytest.raises(VrfProofError):
            pub.verify(b"view=3 seq=7 prepare", bad)
    # n itself as the proof is out of RSAVP1's range, not a proof.
    with pytest.raises(VrfProofError):
        pub.verify(b"x", pub.n.to_bytes(pub.k, "big"))
    # Uniqueness: proving again gives the same pi, so the same beta; nothing to grind.
    assert sk.prove(b"view=3 seq=7 prepare") == pi and proof_to_hash(pi) == beta


def test_keys_from_cryptography_from_seed_and_bytes() -> None:
    crypto_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    sk = VrfPrivateKey.from_cryptography(crypto_key)
    assert VrfPublicKey.from_cryptography(crypto_key.public_key()) == sk.public_key()
    pi = sk.prove(b"a")
    assert sk.public_key().verify(b"a", pi) == proof_to_hash(pi)
    a1, a2 = VrfPrivateKey.from_seed(b"seed-1", 1024), VrfPrivateKey.from_seed(b"seed-1", 1024)
    assert a1.public_key() == a2.public_key() and a1.prove(b"x") == a2.prove(b"x")
    assert VrfPrivateKey.from_seed(b"seed-2", 1024).public_key() != a1.public_key()
    assert a1.public_key().n.bit_length() == 1024
    raw = a1.public_key().to_bytes()
    assert VrfPublicKey.from_bytes(raw) == a1.public_key()
    for bad in (b"", raw[:-1], raw + b"\x00", b"\x00\x00\x00\x01" + raw[4:]):
        with pytest.raises(VrfProofError):
            VrfPublicKey.from_bytes(bad)
    with pytest.raises(SecureUsageError):
        VrfPrivateKey.from_seed(b"x", 512)
    with pytest.raises(SecureUsageError):
        VrfPrivateKey(p=7, q=11, d=3)  # not a key of the allowed size (the public part refuses first)


def test_private_keys_stay_in_the_process() -> None:
    sk = VrfPrivateKey.from_seed(b"k", 1024)
    for leak in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            leak(sk)
    assert "p=" not in repr(sk) and "d=" not in repr(sk)


def test_key_ring_verifies_by_identity_and_memoizes() -> None:
    a, b = VrfPrivateKey.from_seed(b"a", 1024), VrfPrivateKey.from_seed(b"b", 1024)
    ring = VrfKeyRing({"a": a.public_key(), "b": b.public_key()}, cache_max=2)
    pi = a.prove(b"x")
    assert ring.verify("a", b"x", pi) == proof_to_hash(pi)
    assert ring.verify("a", b"x", pi) == proof_to_hash(pi)  # from the memo
    assert ring.verify("b", b"x", pi) is None
    assert ring.verify("c", b"x", pi) is None
    assert ring.verify("a", b"x", b"junk") is None


def test_rsa_2048_costs_are_measured() -> None:
    """Report prove and verify times (the module doc quotes them); fail only if absurdly slow."""
    sk = rfc_key(KEY_2048)
    pub = sk.public_key()
    t0 = time.process_time()
    proofs = [sk.prove(b"%d" % i) for i in range(5)]
    prove_s = (time.process_time() - t0) / 5
    t0 = time.process_time()
    for i, pi in enumerate(proofs):
        pub.verify(b"%d" % i, pi)
    verify_s = (time.process_time() - t0) / 5
    print(f"RSA-2048 RSA-FDH-VRF: prove {prove_s * 1e3:.2f} ms, verify {verify_s * 1e3:.3f} ms (CPU)")
    assert prove_s < 0.5 and verify_s < prove_s
